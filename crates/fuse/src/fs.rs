//! The FUSE operations: each one resolves the inode to a backing path,
//! transforms names and contents through the vault's keys, and does the
//! same operation on the backing directory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_vault::names::{self, EncryptedName};
use atrest_vault::{ContentError, ContentFile, FileCipher, Vault, xattr};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use rustix::fs::{AtFlags, CWD, Mode, Timespec, Timestamps};

use crate::nodes::NodeTable;

/// Striped per-inode locks: writers to one file are serialized (a partial
/// block is read, modified and resealed), readers run in parallel.
const LOCK_STRIPES: usize = 256;

struct OpenFile {
    file: File,
    ino: u64,
}

/// What all open handles of one inode share. The cipher is per inode, not
/// per handle, because a write to a header-only file replaces the header
/// (and so the key) for every handle and hard link at once.
#[derive(Default)]
struct InodeState {
    handles: usize,
    cipher: Option<Arc<FileCipher>>,
}

struct DirEntry {
    name: OsString,
    backing: OsString,
    backing_ino: u64,
    kind: FileType,
}

pub struct VaultFs {
    root: PathBuf,
    vault: Vault,
    ttl: Duration,
    /// Root may create files for other users; a normal user may not.
    as_root: bool,
    nodes: RwLock<NodeTable>,
    dir_ids: RwLock<HashMap<u64, [u8; 16]>>,
    files: RwLock<HashMap<u64, Arc<OpenFile>>>,
    inodes: Mutex<HashMap<u64, InodeState>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_handle: AtomicU64,
    locks: Vec<RwLock<()>>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn rerrno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn kind_of_entry(t: fs::FileType) -> FileType {
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::RegularFile
    }
}

fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos().into(),
            },
            // fuser 0.18 builds a time before the epoch that the kernel sent
            // as (-s, n) as EPOCH - (s + n ns) instead of EPOCH - s + n ns
            // (a TODO in its time.rs); read it back the same way so the
            // kernel's exact value reaches the backing file. The posix
            // end-to-end test checks this against ext4.
            Err(e) => Timespec {
                tv_sec: -(e.duration().as_secs() as i64),
                tv_nsec: e.duration().subsec_nanos().into(),
            },
        },
    }
}

impl VaultFs {
    pub fn new(vault: Vault, ttl: Duration) -> io::Result<Self> {
        let root = vault.root().to_path_buf();
        let root_ino = fs::metadata(&root)?.ino();
        Ok(Self {
            root,
            vault,
            ttl,
            as_root: rustix::process::geteuid().is_root(),
            nodes: RwLock::new(NodeTable::new(root_ino)),
            dir_ids: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            inodes: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
        })
    }

    fn lock(&self, ino: u64) -> &RwLock<()> {
        &self.locks[(ino % LOCK_STRIPES as u64) as usize]
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.nodes.read().path(&self.root, ino.0)
    }

    fn dir_id(&self, ino: u64, dir: &Path) -> Result<[u8; 16], Errno> {
        if let Some(id) = self.dir_ids.read().get(&ino) {
            return Ok(*id);
        }
        let id = names::read_dir_id(dir).map_err(|e| self.content_error(dir, e))?;
        self.dir_ids.write().insert(ino, id);
        Ok(id)
    }

    /// Backing directory, its id and the encrypted form of `name` in it.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<(PathBuf, EncryptedName), Errno> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        let dir = self.path(parent)?;
        let id = self.dir_id(parent.0, &dir)?;
        Ok((dir, self.vault.keys().names.encrypt_name(&id, name)))
    }

    /// Logs corruption (naming the backing file, never plaintext) and
    /// turns it into EIO.
    fn content_error(&self, path: &Path, e: ContentError) -> Errno {
        match e {
            ContentError::Io(e) => errno(e),
            ContentError::Corrupt(what) => {
                let rel = path.strip_prefix(&self.root).unwrap_or(path);
                tracing::error!(
                    backing = %rel.display(),
                    "{what}; returning EIO (run `atrest fsck` for the plaintext path)"
                );
                Errno::EIO
            }
        }
    }

    fn attr(&self, path: &Path, meta: &Metadata) -> FileAttr {
        let kind = kind_of(meta.mode());
        let size = match kind {
            FileType::RegularFile => {
                let layout = self.vault.keys().content.layout();
                layout.plaintext_size(meta.size()).unwrap_or_else(|| {
                    tracing::warn!(backing = %path.display(), "impossible backing size; file is truncated");
                    layout.plaintext_size(meta.size() - meta.size() % layout.sealed_block()).unwrap_or(0)
                })
            }
            FileType::Symlink => self
                .vault
                .keys()
                .names
                .symlink_target_len(&self.root, path, meta.size())
                .unwrap_or(0),
            _ => meta.size(),
        };
        FileAttr {
            ino: INodeNo(self.nodes.read().fuse_ino(meta.ino())),
            size,
            blocks: meta.blocks(),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn stat(&self, path: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(path).map_err(errno)?;
        Ok(self.attr(path, &meta))
    }

    /// Stats a new or found child and records the kernel's reference to it.
    fn enter(&self, parent: INodeNo, dir: &Path, name: &EncryptedName) -> Result<FileAttr, Errno> {
        let path = dir.join(name.entry());
        let attr = self.stat(&path)?;
        self.nodes
            .write()
            .remember(attr.ino.0, (parent.0, OsString::from(name.entry())));
        Ok(attr)
    }

    fn write_side_file(&self, dir: &Path, name: &EncryptedName) -> Result<(), Errno> {
        if let (Some(side), EncryptedName::Long { full, .. }) = (name.side_file(), name) {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(dir.join(side))
                .map_err(errno)?;
            std::io::Write::write_all(&mut f, full.as_bytes()).map_err(errno)?;
        }
        Ok(())
    }

    /// Takes back a new non-directory entry whose creation failed half way
    /// (ENOSPC writing its header or side file), long-link side file too.
    fn undo_entry(&self, dir: &Path, name: &EncryptedName) {
        let path = dir.join(name.entry());
        let long_link = fs::read_link(&path).ok().and_then(|t| {
            atrest_vault::NameTransform::long_link_side_file(&self.root, t.as_os_str())
        });
        let _ = fs::remove_file(&path);
        if let Some(side) = long_link {
            let _ = fs::remove_file(side);
        }
        self.remove_side_file(dir, name);
    }

    fn remove_side_file(&self, dir: &Path, name: &EncryptedName) {
        if let Some(side) = name.side_file() {
            let _ = fs::remove_file(dir.join(side));
        }
    }

    /// Gives a new entry to the requesting user when we run as root, and
    /// the parent's group if it is set-group-id, as the kernel would.
    /// `perm` is set again afterwards: chown clears set-user-id and
    /// set-group-id bits, which the application asked for.
    fn set_owner(
        &self,
        req: &Request,
        dir: &Path,
        path: &Path,
        perm: Option<u32>,
    ) -> Result<(), Errno> {
        if !self.as_root {
            return Ok(());
        }
        let parent = fs::metadata(dir).map_err(errno)?;
        let gid = if parent.mode() & libc::S_ISGID != 0 {
            parent.gid()
        } else {
            req.gid()
        };
        rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(req.uid())),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(rerrno)?;
        match perm {
            Some(perm) if perm & (libc::S_ISUID | libc::S_ISGID) != 0 => {
                rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(perm), AtFlags::empty())
                    .map_err(rerrno)
            }
            _ => Ok(()),
        }
    }

    /// An open handle of `ino`, for operations on a file that has no name
    /// left (unlinked or renamed over while open).
    fn any_open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.files.read().values().find(|f| f.ino == ino).cloned()
    }

    fn handle_of(&self, open: &Arc<OpenFile>) -> Option<FileHandle> {
        self.files
            .read()
            .iter()
            .find(|(_, f)| Arc::ptr_eq(f, open))
            .map(|(fh, _)| FileHandle(*fh))
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn open_file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, Errno> {
        self.files.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn open_backing(path: &Path, flags: i32) -> io::Result<File> {
        // We always need to read (partial blocks are read, modified,
        // resealed); O_APPEND would make pwrite ignore our offsets.
        let custom = flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME);
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(custom)
                .open(path)
        };
        match open(true) {
            Err(e) if !writable && e.raw_os_error() == Some(libc::EACCES) => open(false),
            other => other,
        }
    }

    /// Records a new open handle of `ino` and what its header says.
    fn register_open(&self, ino: u64, cipher: Option<FileCipher>) {
        let mut inodes = self.inodes.lock();
        let state = inodes.entry(ino).or_default();
        state.handles += 1;
        if state.cipher.is_none() {
            state.cipher = cipher.map(Arc::new);
        }
    }

    fn register_release(&self, ino: u64) {
        let mut inodes = self.inodes.lock();
        if let Some(state) = inodes.get_mut(&ino) {
            state.handles = state.handles.saturating_sub(1);
            if state.handles == 0 {
                inodes.remove(&ino);
            }
        }
    }

    /// The cipher to read `ino` with: `None` for a file without a header
    /// (empty). Callers hold the inode's lock.
    fn read_cipher(&self, ino: u64, file: &File) -> Result<Option<Arc<FileCipher>>, ContentError> {
        if let Some(c) = self.inodes.lock().get(&ino).and_then(|s| s.cipher.clone()) {
            return Ok(Some(c));
        }
        let Some(c) = self.vault.keys().content.read_header(file)? else {
            return Ok(None);
        };
        let c = Arc::new(c);
        if let Some(state) = self.inodes.lock().get_mut(&ino) {
            state.cipher = Some(c.clone());
        }
        Ok(Some(c))
    }

    /// The cipher to write `ino` with. A file that holds no block yet gets
    /// a fresh header and file id first, so a header copied from another
    /// file (file-id poisoning) never makes two files share a key. Callers
    /// hold the inode's write lock.
    fn write_cipher(&self, ino: u64, file: &File) -> Result<Arc<FileCipher>, ContentError> {
        if file.metadata()?.len() > atrest_vault::layout::HEADER_LEN
            && let Some(c) = self.read_cipher(ino, file)?
        {
            return Ok(c);
        }
        let c = Arc::new(self.vault.keys().content.write_header(file)?);
        if let Some(state) = self.inodes.lock().get_mut(&ino) {
            state.cipher = Some(c.clone());
        }
        Ok(c)
    }

    fn truncate(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        path: &Path,
        size: u64,
    ) -> Result<(), Errno> {
        let _guard = self.lock(ino.0).write();
        let opened;
        let file = match fh.and_then(|fh| self.files.read().get(&fh.0).cloned()) {
            Some(h) => {
                opened = h;
                &opened.file
            }
            None => &Self::open_backing(path, libc::O_RDWR).map_err(errno)?,
        };
        let cipher = if size == 0 {
            match self
                .read_cipher(ino.0, file)
                .map_err(|e| self.content_error(path, e))?
            {
                Some(c) => c,
                None => return Ok(()),
            }
        } else {
            self.write_cipher(ino.0, file)
                .map_err(|e| self.content_error(path, e))?
        };
        ContentFile {
            file,
            cipher: &cipher,
        }
        .set_len(size)
        .map_err(|e| self.content_error(path, e))
    }

    fn list_dir(&self, ino: INodeNo) -> Result<Vec<DirEntry>, Errno> {
        let dir = self.path(ino)?;
        let id = self.dir_id(ino.0, &dir)?;
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let backing = entry.file_name();
            let name = match self.vault.keys().names.decrypt_entry(&dir, &id, &backing) {
                Ok(Some(name)) => name,
                Ok(None) => continue,
                Err(e) => {
                    // Shown nowhere, reported by fsck; the rest of the
                    // directory stays usable.
                    let _ = self.content_error(&dir.join(&backing), e);
                    continue;
                }
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            out.push(DirEntry {
                name,
                backing,
                backing_ino: std::os::unix::fs::DirEntryExt::ino(&entry),
                kind: kind_of_entry(file_type),
            });
        }
        Ok(out)
    }

    fn finish_create(
        &self,
        req: &Request,
        parent: INodeNo,
        dir: &Path,
        name: &EncryptedName,
        perm: Option<u32>,
    ) -> Result<FileAttr, Errno> {
        let path = dir.join(name.entry());
        self.set_owner(req, dir, &path, perm)?;
        self.enter(parent, dir, name)
    }
}

impl Filesystem for VaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self
            .child(parent, name)
            .and_then(|(dir, enc)| self.enter(parent, &dir, &enc));
        match result {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.write().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let open = fh.and_then(|fh| self.files.read().get(&fh.0).cloned());
        let result = match (open, self.path(ino)) {
            (None, Ok(path)) => self.stat(&path),
            (open, path) => {
                // By descriptor: the kernel gave one, or the file has no
                // name any more but is still open.
                match open.or_else(|| self.any_open_file(ino.0)) {
                    Some(open) => open
                        .file
                        .metadata()
                        .map_err(errno)
                        .map(|meta| self.attr(&path.unwrap_or_default(), &meta)),
                    None => path.and_then(|p| self.stat(&p)),
                }
            }
        };
        match result {
            Ok(attr) => reply.attr(&self.ttl, &attr),
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
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let run = || -> Result<FileAttr, Errno> {
            let path = self.path(ino);
            // A file without a name (unlinked while open) is changed through
            // one of its descriptors.
            let open = match (&path, fh) {
                (Ok(_), _) => None,
                (Err(_), Some(fh)) => Some(self.open_file(fh)?),
                (Err(e), None) => Some(self.any_open_file(ino.0).ok_or(*e)?),
            };
            if let Some(mode) = mode {
                let mode = Mode::from_raw_mode(mode & 0o7777);
                match (&path, &open) {
                    (Ok(p), _) => rustix::fs::chmodat(CWD, p, mode, AtFlags::empty()),
                    (_, Some(f)) => rustix::fs::fchmod(&f.file, mode),
                    _ => unreachable!("either a path or an open file"),
                }
                .map_err(rerrno)?;
            }
            if uid.is_some() || gid.is_some() {
                let (uid, gid) = (
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                );
                match (&path, &open) {
                    (Ok(p), _) => rustix::fs::chownat(CWD, p, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
                    (_, Some(f)) => rustix::fs::fchown(&f.file, uid, gid),
                    _ => unreachable!("either a path or an open file"),
                }
                .map_err(rerrno)?;
            }
            if let Some(size) = size {
                let fh = fh.or_else(|| open.as_ref().and_then(|o| self.handle_of(o)));
                self.truncate(ino, fh, &path.clone().unwrap_or_default(), size)?;
            }
            if atime.is_some() || mtime.is_some() {
                let times = Timestamps {
                    last_access: timespec(atime),
                    last_modification: timespec(mtime),
                };
                match (&path, &open) {
                    (Ok(p), _) => rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW),
                    (_, Some(f)) => rustix::fs::futimens(&f.file, &times),
                    _ => unreachable!("either a path or an open file"),
                }
                .map_err(rerrno)?;
            }
            match (&path, &open) {
                (Ok(p), _) => self.stat(p),
                (_, Some(f)) => f
                    .file
                    .metadata()
                    .map_err(errno)
                    .map(|m| self.attr(Path::new(""), &m)),
                _ => unreachable!("either a path or an open file"),
            }
        };
        match run() {
            Ok(attr) => reply.attr(&self.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let run = || -> Result<OsString, Errno> {
            let path = self.path(ino)?;
            self.vault
                .keys()
                .names
                .read_symlink(&self.root, &path)
                .map_err(|e| self.content_error(&path, e))
        };
        match run() {
            Ok(target) => reply.data(target.as_bytes()),
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
        let run = || -> Result<FileAttr, Errno> {
            let (dir, enc) = self.child(parent, name)?;
            let path = dir.join(enc.entry());
            let perm = mode & !umask & 0o7777;
            if mode & libc::S_IFMT == libc::S_IFREG {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(perm)
                    .open(&path)
                    .map_err(errno)?;
                if let Err(e) = self.vault.keys().content.write_header(&file) {
                    self.undo_entry(&dir, &enc);
                    return Err(self.content_error(&path, e));
                }
            } else {
                rustix::fs::mknodat(
                    CWD,
                    &path,
                    rustix::fs::FileType::from_raw_mode(mode),
                    Mode::from_raw_mode(perm),
                    u64::from(rdev),
                )
                .map_err(rerrno)?;
            }
            self.write_side_file(&dir, &enc)
                .and_then(|()| self.finish_create(req, parent, &dir, &enc, Some(perm)))
                .inspect_err(|_| self.undo_entry(&dir, &enc))
        };
        match run() {
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
        let run = || -> Result<FileAttr, Errno> {
            let (dir, enc) = self.child(parent, name)?;
            let path = dir.join(enc.entry());
            let mut perm = mode & !umask & 0o7777;
            if fs::metadata(&dir).map_err(errno)?.mode() & libc::S_ISGID != 0 {
                perm |= libc::S_ISGID;
            }
            // Created private so the directory id can be written even when
            // the requested mode forbids it; then set to the exact mode.
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(errno)?;
            let finish = || -> Result<FileAttr, Errno> {
                let id = names::create_dir_id(&path).map_err(|e| self.content_error(&path, e))?;
                rustix::fs::chmodat(CWD, &path, Mode::from_raw_mode(perm), AtFlags::empty())
                    .map_err(rerrno)?;
                self.write_side_file(&dir, &enc)?;
                let attr = self.finish_create(req, parent, &dir, &enc, Some(perm))?;
                self.dir_ids.write().insert(attr.ino.0, id);
                Ok(attr)
            };
            finish().inspect_err(|_| {
                // ENOSPC half way: leave no directory without its id.
                let _ = fs::remove_file(path.join(names::DIRID_FILE));
                let _ = fs::remove_dir(&path);
                self.remove_side_file(&dir, &enc);
            })
        };
        match run() {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let run = || -> Result<(), Errno> {
            let (dir, enc) = self.child(parent, name)?;
            let path = dir.join(enc.entry());
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            let long_link = (meta.file_type().is_symlink() && meta.nlink() == 1)
                .then(|| fs::read_link(&path).ok())
                .flatten()
                .and_then(|t| {
                    atrest_vault::NameTransform::long_link_side_file(&self.root, t.as_os_str())
                });
            fs::remove_file(&path).map_err(errno)?;
            self.remove_side_file(&dir, &enc);
            if let Some(side) = long_link {
                let _ = fs::remove_file(side);
            }
            let mut nodes = self.nodes.write();
            let ino = nodes.fuse_ino(meta.ino());
            nodes.unlink(ino, &(parent.0, OsString::from(enc.entry())));
            Ok(())
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let run = || -> Result<(), Errno> {
            let (dir, enc) = self.child(parent, name)?;
            let path = dir.join(enc.entry());
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            if !meta.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            for entry in fs::read_dir(&path).map_err(errno)? {
                if entry.map_err(errno)?.file_name() != names::DIRID_FILE {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            let id_file = path.join(names::DIRID_FILE);
            let saved = fs::read(&id_file).ok();
            let _ = fs::remove_file(&id_file);
            if let Err(e) = fs::remove_dir(&path) {
                if let Some(saved) = saved {
                    let _ = fs::write(&id_file, saved);
                }
                return Err(errno(e));
            }
            self.remove_side_file(&dir, &enc);
            let mut nodes = self.nodes.write();
            let ino = nodes.fuse_ino(meta.ino());
            nodes.unlink(ino, &(parent.0, OsString::from(enc.entry())));
            self.dir_ids.write().remove(&ino);
            Ok(())
        };
        match run() {
            Ok(()) => reply.ok(),
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
        let run = || -> Result<FileAttr, Errno> {
            let (dir, enc) = self.child(parent, link_name)?;
            if target.as_os_str().len() > names::MAX_BACKING_LINK {
                return Err(Errno::ENAMETOOLONG);
            }
            let link = dir.join(enc.entry());
            self.vault
                .keys()
                .names
                .create_symlink(&self.root, target.as_os_str(), &link)
                .map_err(|e| self.content_error(&link, e))?;
            self.write_side_file(&dir, &enc)
                .and_then(|()| self.finish_create(req, parent, &dir, &enc, None))
                .inspect_err(|_| self.undo_entry(&dir, &enc))
        };
        match run() {
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
        let run = || -> Result<(), Errno> {
            let (dir, enc) = self.child(parent, name)?;
            let (newdir, newenc) = self.child(newparent, newname)?;
            let from = dir.join(enc.entry());
            let to = newdir.join(newenc.entry());
            let moved = fs::symlink_metadata(&from).map_err(errno)?;
            let victim = fs::symlink_metadata(&to).ok();
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            if !exchange
                && let Some(v) = &victim
                && v.is_dir()
                && moved.is_dir()
            {
                // rename(2) over an empty directory: ours holds its dir id.
                for entry in fs::read_dir(&to).map_err(errno)? {
                    if entry.map_err(errno)?.file_name() != names::DIRID_FILE {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                let _ = fs::remove_file(to.join(names::DIRID_FILE));
            }
            self.write_side_file(&newdir, &newenc)?;
            let rflags = rustix::fs::RenameFlags::from_bits_truncate(flags.bits());
            rustix::fs::renameat_with(CWD, &from, CWD, &to, rflags).map_err(rerrno)?;
            if !exchange {
                self.remove_side_file(&dir, &enc);
            }
            let mut nodes = self.nodes.write();
            let old_link = (parent.0, OsString::from(enc.entry()));
            let new_link = (newparent.0, OsString::from(newenc.entry()));
            let moved_ino = nodes.fuse_ino(moved.ino());
            let victim_ino = victim.as_ref().map(|v| nodes.fuse_ino(v.ino()));
            if let Some(v) = victim_ino.filter(|v| *v != moved_ino) {
                if exchange {
                    nodes.relink(v, &new_link, old_link.clone());
                } else {
                    nodes.unlink(v, &new_link);
                    if victim.as_ref().is_some_and(|m| m.is_dir()) {
                        self.dir_ids.write().remove(&v);
                    }
                }
            }
            nodes.relink(moved_ino, &old_link, new_link);
            Ok(())
        };
        match run() {
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
        let run = || -> Result<FileAttr, Errno> {
            let from = self.path(ino)?;
            let (dir, enc) = self.child(newparent, newname)?;
            fs::hard_link(&from, dir.join(enc.entry())).map_err(errno)?;
            self.write_side_file(&dir, &enc)
                .and_then(|()| self.enter(newparent, &dir, &enc))
                .inspect_err(|_| {
                    // Only this new name: the link target is another entry.
                    let _ = fs::remove_file(dir.join(enc.entry()));
                    self.remove_side_file(&dir, &enc);
                })
        };
        match run() {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let run = || -> Result<u64, Errno> {
            let path = self.path(ino)?;
            let file = Self::open_backing(&path, flags.0).map_err(errno)?;
            let header = self
                .vault
                .keys()
                .content
                .read_header(&file)
                .map_err(|e| self.content_error(&path, e))?;
            self.register_open(ino.0, header);
            let fh = self.new_handle();
            self.files
                .write()
                .insert(fh, Arc::new(OpenFile { file, ino: ino.0 }));
            if flags.0 & libc::O_TRUNC != 0 {
                // FUSE_ATOMIC_O_TRUNC: the truncation comes with the open.
                self.truncate(ino, Some(FileHandle(fh)), &path, 0)?;
            }
            Ok(fh)
        };
        match run() {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let run = || -> Result<Vec<u8>, Errno> {
            let open = self.open_file(fh)?;
            let _guard = self.lock(ino.0).read();
            let fail = |e| self.content_error(&self.path(ino).unwrap_or_default(), e);
            match self.read_cipher(ino.0, &open.file).map_err(fail)? {
                None => Ok(Vec::new()),
                Some(cipher) => ContentFile {
                    file: &open.file,
                    cipher: &cipher,
                }
                .read_at(offset, size as usize)
                .map_err(fail),
            }
        };
        match run() {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let run = || -> Result<(), Errno> {
            let open = self.open_file(fh)?;
            let _guard = self.lock(ino.0).write();
            let path = || self.path(ino).unwrap_or_default();
            let cipher = self
                .write_cipher(ino.0, &open.file)
                .map_err(|e| self.content_error(&path(), e))?;
            ContentFile {
                file: &open.file,
                cipher: &cipher,
            }
            .write_at(offset, data)
            .map_err(|e| self.content_error(&path(), e))
        };
        match run() {
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
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(open) = self.files.write().remove(&fh.0) {
            self.register_release(open.ino);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let run = || -> Result<(), Errno> {
            let open = self.open_file(fh)?;
            if datasync {
                open.file.sync_data().map_err(errno)
            } else {
                open.file.sync_all().map_err(errno)
            }
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.list_dir(ino) {
            Ok(entries) => {
                let fh = self.new_handle();
                self.dirs.lock().insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.dirs.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let nodes = self.nodes.read();
        let mut i = offset;
        if i == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            i = 1;
        }
        if i == 1 {
            if reply.add(INodeNo::ROOT, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            i = 2;
        }
        for (n, entry) in entries.iter().enumerate().skip((i - 2) as usize) {
            let ino = INodeNo(nodes.fuse_ino(entry.backing_ino));
            if reply.add(ino, n as u64 + 3, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(entries) = self.dirs.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let Ok(dir) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if offset < 2
            && let Ok(attr) = self.stat(&dir)
        {
            if offset == 0 && reply.add(ino, 1, ".", &self.ttl, &attr, Generation(0)) {
                return reply.ok();
            }
            if reply.add(INodeNo::ROOT, 2, "..", &self.ttl, &attr, Generation(0)) {
                return reply.ok();
            }
        }
        let i = offset.max(2);
        for (n, entry) in entries.iter().enumerate().skip((i - 2) as usize) {
            let Ok(attr) = self.stat(&dir.join(&entry.backing)) else {
                continue; // removed since opendir
            };
            if reply.add(
                attr.ino,
                n as u64 + 3,
                &entry.name,
                &self.ttl,
                &attr,
                Generation(0),
            ) {
                break;
            }
            // The kernel now holds a reference, as after a lookup.
            self.nodes
                .write()
                .remember(attr.ino.0, (ino.0, entry.backing.clone()));
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let run = || -> Result<(), Errno> {
            File::open(self.path(ino)?)
                .and_then(|d| d.sync_all())
                .map_err(errno)
        };
        match run() {
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
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(rerrno(e)),
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
        let run = || -> Result<(), Errno> {
            if !name.as_bytes().starts_with(b"user.") {
                return Err(Errno::EOPNOTSUPP);
            }
            let path = self.path(ino)?;
            let names = &self.vault.keys().names;
            let stored = names.encrypt_xattr_name(name);
            let sealed = names.encrypt_xattr_value(&stored, value);
            xattr::set(
                &path,
                &stored,
                &sealed,
                rustix::fs::XattrFlags::from_bits_truncate(flags as u32),
            )
            .map_err(errno)
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let run = || -> Result<Vec<u8>, Errno> {
            if !name.as_bytes().starts_with(b"user.") {
                return Err(Errno::NO_XATTR);
            }
            let path = self.path(ino)?;
            let names = &self.vault.keys().names;
            let stored = names.encrypt_xattr_name(name);
            let sealed = xattr::get(&path, &stored).map_err(errno)?;
            names
                .decrypt_xattr_value(&stored, &sealed)
                .map_err(|e| self.content_error(&path, e))
        };
        match run() {
            Ok(value) if size == 0 => reply.size(value.len() as u32),
            Ok(value) if value.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(value) => reply.data(&value),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let run = || -> Result<Vec<u8>, Errno> {
            let path = self.path(ino)?;
            let mut out = Vec::new();
            for stored in xattr::list(&path).map_err(errno)? {
                if let Ok(Some(name)) = self.vault.keys().names.decrypt_xattr_name(&stored) {
                    out.extend_from_slice(name.as_bytes());
                    out.push(0);
                }
            }
            Ok(out)
        };
        match run() {
            Ok(list) if size == 0 => reply.size(list.len() as u32),
            Ok(list) if list.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(list) => reply.data(&list),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let run = || -> Result<(), Errno> {
            if !name.as_bytes().starts_with(b"user.") {
                return Err(Errno::NO_XATTR);
            }
            let path = self.path(ino)?;
            let stored = self.vault.keys().names.encrypt_xattr_name(name);
            xattr::remove(&path, &stored).map_err(errno)
        };
        match run() {
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
        flags: i32,
        reply: ReplyCreate,
    ) {
        let run = || -> Result<(FileAttr, u64), Errno> {
            let (dir, enc) = self.child(parent, name)?;
            let path = dir.join(enc.entry());
            let perm = mode & !umask & 0o7777;
            let created = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(perm)
                .custom_flags(flags & (libc::O_SYNC | libc::O_DSYNC))
                .open(&path);
            let (file, cipher) = match created {
                Ok(file) => {
                    let finish = || -> Result<FileCipher, Errno> {
                        let c = self
                            .vault
                            .keys()
                            .content
                            .write_header(&file)
                            .map_err(|e| self.content_error(&path, e))?;
                        self.write_side_file(&dir, &enc)?;
                        self.set_owner(req, &dir, &path, Some(perm))?;
                        Ok(c)
                    };
                    match finish() {
                        Ok(c) => (file, Some(c)),
                        Err(e) => {
                            // ENOSPC half way: leave no nameless or headerless entry.
                            let _ = fs::remove_file(&path);
                            self.remove_side_file(&dir, &enc);
                            return Err(e);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                    let file = Self::open_backing(&path, flags).map_err(errno)?;
                    let c = self
                        .vault
                        .keys()
                        .content
                        .read_header(&file)
                        .map_err(|e| self.content_error(&path, e))?;
                    (file, c)
                }
                Err(e) => return Err(errno(e)),
            };
            let attr = self.enter(parent, &dir, &enc)?;
            self.register_open(attr.ino.0, cipher);
            let fh = self.new_handle();
            self.files.write().insert(
                fh,
                Arc::new(OpenFile {
                    file,
                    ino: attr.ino.0,
                }),
            );
            Ok((attr, fh))
        };
        match run() {
            Ok((attr, fh)) => reply.created(
                &self.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Only plain allocation, which for us means: extend the size.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let run = || -> Result<(), Errno> {
            let open = self.open_file(fh)?;
            let path = self.path(ino).unwrap_or_default();
            let size = {
                let _guard = self.lock(ino.0).read();
                let meta = open.file.metadata().map_err(errno)?;
                self.attr(&path, &meta).size
            };
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            if end > size {
                self.truncate(ino, Some(fh), &path, end)?;
            }
            Ok(())
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
