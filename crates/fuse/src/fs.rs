//! The FUSE operations: each one finds the backing directory handle of
//! the inode (see `dirs`), transforms names and contents through the
//! vault's keys, and does the same operation relative to that handle.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_vault::names::{self, EncryptedName};
use atrest_vault::root_attr::RootAttr;
use atrest_vault::{ContentError, ContentFile, FileCipher, Vault, xattr};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::ciphers::Ciphers;
use crate::dirs::DirHandles;
use crate::nodes::NodeTable;

/// Striped per-inode locks: writers to one file are serialized (a partial
/// block is read, modified and resealed), readers run in parallel.
pub(crate) const LOCK_STRIPES: usize = 256;

struct OpenFile {
    file: File,
    ino: u64,
}

struct DirEntry {
    name: OsString,
    backing: OsString,
    backing_ino: u64,
    kind: FileType,
}

/// A backing entry: its directory's handle and its backing name.
type At = (Arc<OwnedFd>, OsString);

pub struct VaultFs {
    root: PathBuf,
    /// The backing root's parent and the root's name in it: the root is
    /// reached like every other entry.
    root_at: At,
    root_fd: Arc<OwnedFd>,
    /// Mode and owner of the plaintext root (`None`: the backing root's).
    root_attr: Mutex<Option<RootAttr>>,
    vault: Vault,
    ttl: Duration,
    /// Root may create files for other users; a normal user may not.
    as_root: bool,
    nodes: RwLock<NodeTable>,
    dir_handles: DirHandles,
    dir_ids: RwLock<HashMap<u64, [u8; 16]>>,
    files: RwLock<HashMap<u64, Arc<OpenFile>>>,
    ciphers: Ciphers,
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

pub(crate) fn system_time(secs: i64, nsecs: i64) -> SystemTime {
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

/// What we use of a backing `stat`, in one width on every architecture.
struct Meta {
    ino: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    size: u64,
    blocks: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Meta {
    // The field types of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &rustix::fs::Stat) -> Self {
        Self {
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u32,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: (st.st_atime as i64, st.st_atime_nsec as i64),
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

fn stat_at(dir: impl AsFd, name: &OsStr) -> Result<Meta, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| Meta::from_stat(&st))
        .map_err(rerrno)
}

fn fstat(fd: impl AsFd) -> Result<Meta, Errno> {
    rustix::fs::fstat(fd)
        .map(|st| Meta::from_stat(&st))
        .map_err(rerrno)
}

/// Opens `path` relative to `dir` as a directory handle that only names
/// it (no read permission needed).
fn open_dir_handle(dir: impl AsFd, path: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `path` relative to `dir` for listing.
fn open_dir_listing(dir: impl AsFd, path: &OsStr) -> Result<rustix::fs::Dir, Errno> {
    let fd = rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(rerrno)?;
    rustix::fs::Dir::new(fd).map_err(rerrno)
}

/// Whether the backing directory `path` (relative to `dir`) holds nothing
/// but its directory id.
fn is_empty_dir(dir: impl AsFd, path: &OsStr) -> Result<bool, Errno> {
    for entry in open_dir_listing(dir, path)? {
        let entry = entry.map_err(rerrno)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." && name != names::DIRID_FILE.as_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn dirid_of(entry: &OsStr) -> PathBuf {
    Path::new(entry).join(names::DIRID_FILE)
}

pub(crate) fn timespec(t: Option<TimeOrNow>) -> Timespec {
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
        let root = std::fs::canonicalize(vault.root())?;
        let root_fd = Arc::new(open_dir_handle(rustix::fs::CWD, &root)?);
        let root_ino = Meta::from_stat(&rustix::fs::fstat(&*root_fd)?).ino;
        let root_at = match (root.parent(), root.file_name()) {
            (Some(parent), Some(name)) => (
                Arc::new(open_dir_handle(rustix::fs::CWD, parent)?),
                name.to_os_string(),
            ),
            _ => (root_fd.clone(), OsString::from(".")),
        };
        let root_attr = vault.keys().names.read_root_attr(&root).map_err(|e| {
            io::Error::other(format!(
                "{}: {e}; restore it from a backup, or delete it to show the backing \
                     root's own mode and owner at the mount root",
                root.join(atrest_vault::root_attr::ROOT_ATTR_FILE).display()
            ))
        })?;
        Ok(Self {
            root,
            root_at,
            root_fd,
            root_attr: Mutex::new(root_attr),
            vault,
            ttl,
            as_root: rustix::process::geteuid().is_root(),
            nodes: RwLock::new(NodeTable::new(root_ino)),
            dir_handles: DirHandles::new(crate::dirs::capacity()),
            dir_ids: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            ciphers: Ciphers::default(),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
        })
    }

    fn lock(&self, ino: u64) -> &RwLock<()> {
        &self.locks[(ino % LOCK_STRIPES as u64) as usize]
    }

    /// The handle of directory `ino`: cached, or opened from the nearest
    /// cached ancestor down, one component at a time.
    fn dir_fd(&self, ino: u64) -> Result<Arc<OwnedFd>, Errno> {
        if ino == INodeNo::ROOT.0 {
            return Ok(self.root_fd.clone());
        }
        if let Some(fd) = self.dir_handles.get(ino) {
            return Ok(fd);
        }
        // A rename between reading the chain and opening it could hand us
        // another directory; the inode check catches that, and we retry.
        for _ in 0..3 {
            let (mut base, chain) = {
                let nodes = self.nodes.read();
                let mut chain = Vec::new();
                let mut cur = ino;
                let base = loop {
                    let (parent, name) = nodes.link(cur)?;
                    chain.push((cur, name.clone()));
                    cur = *parent;
                    if cur == INodeNo::ROOT.0 {
                        break self.root_fd.clone();
                    }
                    if let Some(fd) = self.dir_handles.get(cur) {
                        break fd;
                    }
                    if chain.len() > 4096 {
                        return Err(Errno::ELOOP);
                    }
                };
                (base, chain)
            };
            let mut moved = false;
            for (want, name) in chain.into_iter().rev() {
                let fd = Arc::new(open_dir_handle(&*base, &name).map_err(rerrno)?);
                let got = self.nodes.read().fuse_ino(fstat(&*fd)?.ino);
                if got != want {
                    moved = true;
                    break;
                }
                self.dir_handles.insert(want, fd.clone());
                base = fd;
            }
            if !moved {
                return Ok(base);
            }
        }
        Err(Errno::ESTALE)
    }

    /// Where `ino` is: its directory's handle and its backing name.
    fn at(&self, ino: u64) -> Result<At, Errno> {
        if ino == INodeNo::ROOT.0 {
            return Ok(self.root_at.clone());
        }
        let (parent, name) = self.nodes.read().link(ino)?.clone();
        Ok((self.dir_fd(parent)?, name))
    }

    /// The backing path of `name` in `ino` relative to the vault, for
    /// messages.
    fn backing(&self, ino: u64, name: Option<&OsStr>) -> PathBuf {
        let mut path = self
            .nodes
            .read()
            .path(Path::new(""), ino)
            .unwrap_or_default();
        if let Some(name) = name {
            path.push(name);
        }
        path
    }

    fn dir_id(&self, ino: u64, dir: &OwnedFd) -> Result<[u8; 16], Errno> {
        if let Some(id) = self.dir_ids.read().get(&ino) {
            return Ok(*id);
        }
        let id = names::read_dir_id_at(dir, Path::new("."))
            .map_err(|e| self.content_error(&self.backing(ino, None), e))?;
        self.dir_ids.write().insert(ino, id);
        Ok(id)
    }

    /// Backing directory handle and the encrypted form of `name` in it.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<(Arc<OwnedFd>, EncryptedName), Errno> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        let dir = self.dir_fd(parent.0)?;
        let id = self.dir_id(parent.0, &dir)?;
        Ok((dir, self.vault.keys().names.encrypt_name(&id, name)))
    }

    /// Logs corruption (naming the backing file relative to the vault,
    /// never plaintext) and turns it into EIO.
    fn content_error(&self, backing: &Path, e: ContentError) -> Errno {
        match e {
            ContentError::Io(e) => errno(e),
            ContentError::Corrupt(what) => {
                tracing::error!(
                    backing = %backing.display(),
                    "{what}; returning EIO (run `atrest fsck` for the plaintext path)"
                );
                Errno::EIO
            }
        }
    }

    /// Reads the header of the file `ino`, and cuts a last block that a
    /// crash tore (format §6.5) back to the last complete block, so the
    /// file reads to there instead of failing with `EIO` at its end.
    ///
    /// [`Self::stat`] does this before the kernel first learns a file's
    /// size (at lookup), and every open again. A read-only open or lookup
    /// cuts too: the torn bytes can never be read (they authenticate as
    /// nothing), the cut removes only what a crash of a mount process left,
    /// and leaving it would make every later append fail, or land past a
    /// size the kernel still believes. Under the inode's write lock,
    /// because a file being appended to looks torn for a moment. A cut that
    /// fails (a backing file we may only read) is logged; the file then
    /// reads as before, its end failing with `EIO`.
    ///
    /// `backing` names the file in messages.
    fn open_header(
        &self,
        ino: u64,
        file: &File,
        backing: &dyn Fn() -> PathBuf,
    ) -> Result<Option<FileCipher>, Errno> {
        let _guard = self.lock(ino).write();
        let cipher = self
            .vault
            .keys()
            .content
            .read_header(file)
            .map_err(|e| self.content_error(&backing(), e))?;
        if let Some(cipher) = &cipher {
            self.cut_torn_tail(file, cipher, backing);
        }
        Ok(cipher)
    }

    /// See [`Self::open_header`]; callers hold the inode's write lock.
    fn cut_torn_tail(&self, file: &File, cipher: &FileCipher, backing: &dyn Fn() -> PathBuf) {
        match (ContentFile { file, cipher }).cut_torn_tail() {
            Ok(None) => {}
            Ok(Some(tear)) => tracing::warn!(
                backing = %backing().display(),
                "the last block was torn by a crash during a write: cut back to the last \
                 complete block, {} backing bytes dropped (the file now ends at {} bytes)",
                tear.dropped(),
                tear.plaintext_len
            ),
            Err(e) => tracing::warn!(
                backing = %backing().display(),
                "the last block was torn by a crash during a write, and cutting it failed \
                 ({e}); its end reads as EIO until `atrest fsck --repair` cuts it"
            ),
        }
    }

    /// `link`: where the entry is, to read a long symlink's length.
    fn attr(&self, link: Option<(&OwnedFd, &OsStr)>, meta: &Meta) -> FileAttr {
        let kind = kind_of(meta.mode);
        let size = match kind {
            FileType::RegularFile => {
                let layout = self.vault.keys().content.layout();
                layout.plaintext_size(meta.size).unwrap_or_else(|| {
                    tracing::warn!(
                        backing_ino = meta.ino,
                        "impossible backing size; file is truncated"
                    );
                    layout
                        .plaintext_size(meta.size - meta.size % layout.sealed_block())
                        .unwrap_or(0)
                })
            }
            FileType::Symlink => link
                .and_then(|(dir, name)| {
                    self.vault
                        .keys()
                        .names
                        .symlink_target_len_at(&self.root, dir, Path::new(name), meta.size)
                        .ok()
                })
                .unwrap_or(0),
            _ => meta.size,
        };
        let ino = self.nodes.read().fuse_ino(meta.ino);
        let (mut perm, mut uid, mut gid) = ((meta.mode & 0o7777) as u16, meta.uid, meta.gid);
        if ino == INodeNo::ROOT.0
            && let Some(root) = *self.root_attr.lock()
        {
            (perm, uid, gid) = (root.mode as u16, root.uid, root.gid);
        }
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: meta.blocks,
            atime: system_time(meta.atime.0, meta.atime.1),
            mtime: system_time(meta.mtime.0, meta.mtime.1),
            ctime: system_time(meta.ctime.0, meta.ctime.1),
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: meta.nlink,
            uid,
            gid,
            rdev: meta.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    fn stat(&self, dir: &OwnedFd, name: &OsStr) -> Result<FileAttr, Errno> {
        let mut meta = stat_at(dir, name)?;
        if kind_of(meta.mode) == FileType::RegularFile
            && self.vault.keys().content.layout().may_end_torn(meta.size)
        {
            // Before the kernel learns the size: an append through a
            // handle opened later starts at the size the kernel holds. A
            // failure here is the open's to report (and logged): a lookup
            // must work, or the file could not even be removed.
            let ino = self.nodes.read().fuse_ino(meta.ino);
            // Not yet in the node table at its first lookup: named through
            // its directory.
            let backing = || match fstat(dir) {
                Ok(d) => self.backing(self.nodes.read().fuse_ino(d.ino), Some(name)),
                Err(_) => PathBuf::from(name),
            };
            if let Ok(file) = Self::open_backing(dir, name, libc::O_RDONLY)
                && self.open_header(ino, &file, &backing).is_ok()
            {
                meta = fstat(&file)?;
            }
        }
        Ok(self.attr(Some((dir, name)), &meta))
    }

    /// Mode and group of directory `ino` as the mount shows them.
    fn dir_mode_gid(&self, ino: u64, dir: &OwnedFd) -> Result<(u32, u32), Errno> {
        let meta = fstat(dir)?;
        if ino == INodeNo::ROOT.0
            && let Some(root) = *self.root_attr.lock()
        {
            return Ok((root.mode, root.gid));
        }
        Ok((meta.mode, meta.gid))
    }

    /// Stats a new or found child and records the kernel's reference to it.
    fn enter(
        &self,
        parent: INodeNo,
        dir: &OwnedFd,
        name: &EncryptedName,
    ) -> Result<FileAttr, Errno> {
        let attr = self.stat(dir, OsStr::new(name.entry()))?;
        self.remember(parent, name, attr)
    }

    fn remember(
        &self,
        parent: INodeNo,
        name: &EncryptedName,
        attr: FileAttr,
    ) -> Result<FileAttr, Errno> {
        self.nodes
            .write()
            .remember(attr.ino.0, (parent.0, OsString::from(name.entry())));
        Ok(attr)
    }

    fn write_side_file(&self, dir: &OwnedFd, name: &EncryptedName) -> Result<(), Errno> {
        if let (Some(side), EncryptedName::Long { full, .. }) = (name.side_file(), name) {
            let fd = rustix::fs::openat(
                dir,
                side.as_str(),
                OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::TRUNC
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(rerrno)?;
            std::io::Write::write_all(&mut File::from(fd), full.as_bytes()).map_err(errno)?;
        }
        Ok(())
    }

    /// Takes back a new non-directory entry whose creation failed half way
    /// (ENOSPC writing its header or side file), long-link side file too.
    fn undo_entry(&self, dir: &OwnedFd, name: &EncryptedName) {
        let long_link = names::read_link_at(dir, Path::new(name.entry()))
            .ok()
            .and_then(|t| atrest_vault::NameTransform::long_link_side_file(&self.root, &t));
        let _ = rustix::fs::unlinkat(dir, name.entry(), AtFlags::empty());
        if let Some(side) = long_link {
            let _ = std::fs::remove_file(side);
        }
        self.remove_side_file(dir, name);
    }

    fn remove_side_file(&self, dir: &OwnedFd, name: &EncryptedName) {
        if let Some(side) = name.side_file() {
            let _ = rustix::fs::unlinkat(dir, side.as_str(), AtFlags::empty());
        }
    }

    /// Gives a new entry to the requesting user when we run as root, and
    /// the parent's group if it is set-group-id, as the kernel would.
    /// `perm` is set again afterwards: chown clears set-user-id and
    /// set-group-id bits, which the application asked for.
    fn set_owner(
        &self,
        req: &Request,
        parent: INodeNo,
        dir: &OwnedFd,
        name: &OsStr,
        perm: Option<u32>,
    ) -> Result<(), Errno> {
        if !self.as_root {
            return Ok(());
        }
        let (parent_mode, parent_gid) = self.dir_mode_gid(parent.0, dir)?;
        let gid = if parent_mode & libc::S_ISGID != 0 {
            parent_gid
        } else {
            req.gid()
        };
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(req.uid())),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(rerrno)?;
        match perm {
            Some(perm) if perm & (libc::S_ISUID | libc::S_ISGID) != 0 => {
                rustix::fs::chmodat(dir, name, Mode::from_raw_mode(perm), AtFlags::empty())
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

    fn open_backing(dir: &OwnedFd, name: &OsStr, flags: i32) -> Result<File, Errno> {
        // We always need to read (partial blocks are read, modified,
        // resealed); O_APPEND would make pwrite ignore our offsets.
        let custom = OFlags::from_bits_truncate(
            (flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME)) as u32,
        ) | OFlags::NOFOLLOW
            | OFlags::CLOEXEC;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let open = |access: OFlags| {
            rustix::fs::openat(dir, name, access | custom, Mode::empty()).map(File::from)
        };
        match open(OFlags::RDWR) {
            Err(rustix::io::Errno::ACCESS) if !writable => open(OFlags::RDONLY),
            other => other,
        }
        .map_err(rerrno)
    }

    fn truncate(&self, ino: INodeNo, fh: Option<FileHandle>, size: u64) -> Result<(), Errno> {
        let _guard = self.lock(ino.0).write();
        let opened;
        let file = match fh.and_then(|fh| self.files.read().get(&fh.0).cloned()) {
            Some(h) => {
                opened = h;
                &opened.file
            }
            None => {
                let (dir, name) = self.at(ino.0)?;
                &Self::open_backing(&dir, &name, libc::O_RDWR)?
            }
        };
        let fail = |e| self.content_error(&self.backing(ino.0, None), e);
        let cipher = if size == 0 {
            match self
                .ciphers
                .for_read(&self.vault.keys().content, ino.0, file)
                .map_err(fail)?
            {
                Some(c) => c,
                None => return Ok(()),
            }
        } else {
            self.ciphers
                .for_write(&self.vault.keys().content, ino.0, file)
                .map_err(fail)?
        };
        // A path truncate reaches a file no open has repaired.
        self.cut_torn_tail(file, &cipher, &|| self.backing(ino.0, None));
        ContentFile {
            file,
            cipher: &cipher,
        }
        .set_len(size)
        .map_err(fail)
    }

    fn list_dir(&self, ino: INodeNo) -> Result<Vec<DirEntry>, Errno> {
        let dir = self.dir_fd(ino.0)?;
        let id = self.dir_id(ino.0, &dir)?;
        let mut out = Vec::new();
        for entry in open_dir_listing(&*dir, OsStr::new("."))? {
            let entry = entry.map_err(rerrno)?;
            let backing = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            let name =
                match self
                    .vault
                    .keys()
                    .names
                    .decrypt_entry_at(&*dir, Path::new("."), &id, &backing)
                {
                    Ok(Some(name)) => name,
                    Ok(None) => continue,
                    Err(e) => {
                        // Shown nowhere, reported by fsck; the rest of the
                        // directory stays usable.
                        let _ = self.content_error(&self.backing(ino.0, Some(&backing)), e);
                        continue;
                    }
                };
            let kind = match entry.file_type() {
                rustix::fs::FileType::Unknown => match stat_at(&*dir, &backing) {
                    Ok(meta) => kind_of(meta.mode),
                    Err(_) => continue,
                },
                t => kind_of(t.as_raw_mode()),
            };
            out.push(DirEntry {
                name,
                backing,
                backing_ino: entry.ino(),
                kind,
            });
        }
        Ok(out)
    }

    fn finish_create(
        &self,
        req: &Request,
        parent: INodeNo,
        dir: &OwnedFd,
        name: &EncryptedName,
        perm: Option<u32>,
    ) -> Result<FileAttr, Errno> {
        self.set_owner(req, parent, dir, OsStr::new(name.entry()), perm)?;
        self.enter(parent, dir, name)
    }

    /// chmod/chown of the mount root: kept in the vault's sealed record,
    /// never on the backing root (which stays private).
    fn set_root_attr(
        &self,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), Errno> {
        let mut current = self.root_attr.lock();
        let mut attr = match *current {
            Some(attr) => attr,
            None => {
                let meta = fstat(&*self.root_fd)?;
                RootAttr {
                    mode: meta.mode & 0o7777,
                    uid: meta.uid,
                    gid: meta.gid,
                }
            }
        };
        if let Some(mode) = mode {
            attr.mode = mode & 0o7777;
        }
        if let Some(uid) = uid {
            attr.uid = uid;
        }
        if let Some(gid) = gid {
            attr.gid = gid;
        }
        self.vault
            .keys()
            .names
            .write_root_attr(&self.root, &attr)
            .map_err(|e| {
                tracing::error!("writing the root attributes: {e}");
                Errno::EIO
            })?;
        *current = Some(attr);
        Ok(())
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
        if self.nodes.write().forget(ino.0, nlookup) {
            self.dir_handles.remove(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let open = fh.and_then(|fh| self.files.read().get(&fh.0).cloned());
        let result = match (open, self.at(ino.0)) {
            (None, Ok((dir, name))) => self.stat(&dir, &name),
            (open, at) => {
                // By descriptor: the kernel gave one, or the file has no
                // name any more but is still open.
                match open.or_else(|| self.any_open_file(ino.0)) {
                    Some(open) => fstat(&open.file).map(|meta| self.attr(None, &meta)),
                    None => at.and_then(|(dir, name)| self.stat(&dir, &name)),
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
            let path = self.at(ino.0);
            // A file without a name (unlinked while open) is changed through
            // one of its descriptors.
            let open = match (&path, fh) {
                (Ok(_), _) => None,
                (Err(_), Some(fh)) => Some(self.open_file(fh)?),
                (Err(e), None) => Some(self.any_open_file(ino.0).ok_or(*e)?),
            };
            if ino == INodeNo::ROOT && (mode.is_some() || uid.is_some() || gid.is_some()) {
                self.set_root_attr(mode, uid, gid)?;
            }
            let (mode, uid, gid) = if ino == INodeNo::ROOT {
                (None, None, None)
            } else {
                (mode, uid, gid)
            };
            if let Some(mode) = mode {
                let mode = Mode::from_raw_mode(mode & 0o7777);
                match (&path, &open) {
                    (Ok((d, n)), _) => rustix::fs::chmodat(d, n, mode, AtFlags::empty()),
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
                    (Ok((d, n)), _) => {
                        rustix::fs::chownat(d, n, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    }
                    (_, Some(f)) => rustix::fs::fchown(&f.file, uid, gid),
                    _ => unreachable!("either a path or an open file"),
                }
                .map_err(rerrno)?;
            }
            if let Some(size) = size {
                let fh = fh.or_else(|| open.as_ref().and_then(|o| self.handle_of(o)));
                self.truncate(ino, fh, size)?;
            }
            if atime.is_some() || mtime.is_some() {
                let times = Timestamps {
                    last_access: timespec(atime),
                    last_modification: timespec(mtime),
                };
                match (&path, &open) {
                    (Ok((d, n)), _) => {
                        rustix::fs::utimensat(d, n, &times, AtFlags::SYMLINK_NOFOLLOW)
                    }
                    (_, Some(f)) => rustix::fs::futimens(&f.file, &times),
                    _ => unreachable!("either a path or an open file"),
                }
                .map_err(rerrno)?;
            }
            match (&path, &open) {
                (Ok((d, n)), _) => self.stat(d, n),
                (_, Some(f)) => fstat(&f.file).map(|m| self.attr(None, &m)),
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
            let (dir, name) = self.at(ino.0)?;
            self.vault
                .keys()
                .names
                .read_symlink_at(&self.root, &*dir, Path::new(&name))
                .map_err(|e| self.content_error(&self.backing(ino.0, None), e))
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
            let perm = mode & !umask & 0o7777;
            if mode & libc::S_IFMT == libc::S_IFREG {
                let file = rustix::fs::openat(
                    &*dir,
                    enc.entry(),
                    OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(perm),
                )
                .map(File::from)
                .map_err(rerrno)?;
                if let Err(e) = self.vault.keys().content.write_header(&file) {
                    self.undo_entry(&dir, &enc);
                    let backing = self.backing(parent.0, Some(OsStr::new(enc.entry())));
                    return Err(self.content_error(&backing, e));
                }
            } else {
                rustix::fs::mknodat(
                    &*dir,
                    enc.entry(),
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
            let entry = OsStr::new(enc.entry());
            let mut perm = mode & !umask & 0o7777;
            if self.dir_mode_gid(parent.0, &dir)?.0 & libc::S_ISGID != 0 {
                perm |= libc::S_ISGID;
            }
            // Created private so the directory id can be written even when
            // the requested mode forbids it; then set to the exact mode.
            rustix::fs::mkdirat(&*dir, entry, Mode::from_raw_mode(0o700)).map_err(rerrno)?;
            let finish = || -> Result<FileAttr, Errno> {
                // Its handle now saves opening it again at the first entry
                // made in it.
                let handle = Arc::new(open_dir_handle(&*dir, entry).map_err(rerrno)?);
                let id = names::create_dir_id_at(&*handle, Path::new("."))
                    .map_err(|e| self.content_error(&self.backing(parent.0, Some(entry)), e))?;
                rustix::fs::chmodat(&*dir, entry, Mode::from_raw_mode(perm), AtFlags::empty())
                    .map_err(rerrno)?;
                self.write_side_file(&dir, &enc)?;
                self.set_owner(req, parent, &dir, entry, Some(perm))?;
                let attr = self.attr(None, &fstat(&*handle)?);
                self.dir_ids.write().insert(attr.ino.0, id);
                self.dir_handles.insert(attr.ino.0, handle);
                self.remember(parent, &enc, attr)
            };
            finish().inspect_err(|_| {
                // ENOSPC half way: leave no directory without its id.
                let _ = rustix::fs::unlinkat(&*dir, dirid_of(entry), AtFlags::empty());
                let _ = rustix::fs::unlinkat(&*dir, entry, AtFlags::REMOVEDIR);
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
            let entry = OsStr::new(enc.entry());
            let meta = stat_at(&*dir, entry)?;
            let long_link = (meta.mode & libc::S_IFMT == libc::S_IFLNK && meta.nlink == 1)
                .then(|| names::read_link_at(&*dir, Path::new(entry)).ok())
                .flatten()
                .and_then(|t| atrest_vault::NameTransform::long_link_side_file(&self.root, &t));
            rustix::fs::unlinkat(&*dir, entry, AtFlags::empty()).map_err(rerrno)?;
            self.remove_side_file(&dir, &enc);
            if let Some(side) = long_link {
                let _ = std::fs::remove_file(side);
            }
            let mut nodes = self.nodes.write();
            let ino = nodes.fuse_ino(meta.ino);
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
            let entry = OsStr::new(enc.entry());
            let meta = stat_at(&*dir, entry)?;
            if meta.mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            if !is_empty_dir(&*dir, entry)? {
                return Err(Errno::ENOTEMPTY);
            }
            let id_file = dirid_of(entry);
            let saved = names::read_at(&*dir, &id_file).ok();
            let _ = rustix::fs::unlinkat(&*dir, &id_file, AtFlags::empty());
            if let Err(e) = rustix::fs::unlinkat(&*dir, entry, AtFlags::REMOVEDIR) {
                if let Some(saved) = saved {
                    let _ = names::write_new_at(&*dir, &id_file, &saved, 0o444);
                }
                return Err(rerrno(e));
            }
            self.remove_side_file(&dir, &enc);
            let mut nodes = self.nodes.write();
            let ino = nodes.fuse_ino(meta.ino);
            nodes.unlink(ino, &(parent.0, OsString::from(enc.entry())));
            self.dir_ids.write().remove(&ino);
            self.dir_handles.remove(ino);
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
            self.vault
                .keys()
                .names
                .create_symlink_at(
                    &self.root,
                    target.as_os_str(),
                    &*dir,
                    Path::new(enc.entry()),
                )
                .map_err(|e| {
                    self.content_error(&self.backing(parent.0, Some(OsStr::new(enc.entry()))), e)
                })?;
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
            let (from, to) = (OsStr::new(enc.entry()), OsStr::new(newenc.entry()));
            let moved = stat_at(&*dir, from)?;
            let victim = stat_at(&*newdir, to).ok();
            let is_dir = |m: &Meta| m.mode & libc::S_IFMT == libc::S_IFDIR;
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            if !exchange
                && let Some(v) = &victim
                && is_dir(v)
                && is_dir(&moved)
            {
                // rename(2) over an empty directory: ours holds its dir id.
                if !is_empty_dir(&*newdir, to)? {
                    return Err(Errno::ENOTEMPTY);
                }
                let _ = rustix::fs::unlinkat(&*newdir, dirid_of(to), AtFlags::empty());
            }
            self.write_side_file(&newdir, &newenc)?;
            let rflags = rustix::fs::RenameFlags::from_bits_truncate(flags.bits());
            rustix::fs::renameat_with(&*dir, from, &*newdir, to, rflags).map_err(rerrno)?;
            if !exchange {
                self.remove_side_file(&dir, &enc);
            }
            let mut nodes = self.nodes.write();
            let old_link = (parent.0, OsString::from(enc.entry()));
            let new_link = (newparent.0, OsString::from(newenc.entry()));
            let moved_ino = nodes.fuse_ino(moved.ino);
            let victim_ino = victim.as_ref().map(|v| nodes.fuse_ino(v.ino));
            if let Some(v) = victim_ino.filter(|v| *v != moved_ino) {
                if exchange {
                    nodes.relink(v, &new_link, old_link.clone());
                } else {
                    nodes.unlink(v, &new_link);
                    if victim.as_ref().is_some_and(is_dir) {
                        self.dir_ids.write().remove(&v);
                        self.dir_handles.remove(v);
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
            let (fromdir, from) = self.at(ino.0)?;
            let (dir, enc) = self.child(newparent, newname)?;
            rustix::fs::linkat(&*fromdir, &from, &*dir, enc.entry(), AtFlags::empty())
                .map_err(rerrno)?;
            self.write_side_file(&dir, &enc)
                .and_then(|()| self.enter(newparent, &dir, &enc))
                .inspect_err(|_| {
                    // Only this new name: the link target is another entry.
                    let _ = rustix::fs::unlinkat(&*dir, enc.entry(), AtFlags::empty());
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
            let (dir, name) = self.at(ino.0)?;
            let file = Self::open_backing(&dir, &name, flags.0)?;
            let header = self.open_header(ino.0, &file, &|| self.backing(ino.0, None))?;
            self.ciphers.opened(ino.0, header);
            let fh = self.new_handle();
            self.files
                .write()
                .insert(fh, Arc::new(OpenFile { file, ino: ino.0 }));
            if flags.0 & libc::O_TRUNC != 0 {
                // FUSE_ATOMIC_O_TRUNC: the truncation comes with the open.
                self.truncate(ino, Some(FileHandle(fh)), 0)?;
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
            let fail = |e| self.content_error(&self.backing(ino.0, None), e);
            match self
                .ciphers
                .for_read(&self.vault.keys().content, ino.0, &open.file)
                .map_err(fail)?
            {
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
            let fail = |e| self.content_error(&self.backing(ino.0, None), e);
            let cipher = self
                .ciphers
                .for_write(&self.vault.keys().content, ino.0, &open.file)
                .map_err(fail)?;
            ContentFile {
                file: &open.file,
                cipher: &cipher,
            }
            .write_at(offset, data)
            .map_err(fail)
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
            self.ciphers.released(open.ino);
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
        let Ok(dir) = self.dir_fd(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if offset < 2
            && let Ok(attr) = fstat(&*dir).map(|meta| self.attr(None, &meta))
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
            let Ok(attr) = self.stat(&dir, &entry.backing) else {
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
            let dir = self.dir_fd(ino.0)?;
            let fd = rustix::fs::openat(
                &*dir,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(rerrno)?;
            File::from(fd).sync_all().map_err(errno)
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
            let (dir, entry) = self.at(ino.0)?;
            let path = xattr::path_at(&*dir, &entry);
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
            let (dir, entry) = self.at(ino.0)?;
            let path = xattr::path_at(&*dir, &entry);
            let names = &self.vault.keys().names;
            let stored = names.encrypt_xattr_name(name);
            let sealed = xattr::get(&path, &stored).map_err(errno)?;
            names
                .decrypt_xattr_value(&stored, &sealed)
                .map_err(|e| self.content_error(&self.backing(ino.0, None), e))
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
            let (dir, entry) = self.at(ino.0)?;
            let path = xattr::path_at(&*dir, &entry);
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
            let (dir, entry) = self.at(ino.0)?;
            let path = xattr::path_at(&*dir, &entry);
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
            let entry = OsStr::new(enc.entry());
            let backing = || self.backing(parent.0, Some(entry));
            let perm = mode & !umask & 0o7777;
            let sync = OFlags::from_bits_truncate((flags & (libc::O_SYNC | libc::O_DSYNC)) as u32);
            let created = rustix::fs::openat(
                &*dir,
                entry,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | sync,
                Mode::from_raw_mode(perm),
            );
            let (file, cipher) = match created {
                Ok(fd) => {
                    let file = File::from(fd);
                    let finish = || -> Result<FileCipher, Errno> {
                        let c = self
                            .vault
                            .keys()
                            .content
                            .write_header(&file)
                            .map_err(|e| self.content_error(&backing(), e))?;
                        self.write_side_file(&dir, &enc)?;
                        self.set_owner(req, parent, &dir, entry, Some(perm))?;
                        Ok(c)
                    };
                    match finish() {
                        Ok(c) => (file, Some(c)),
                        Err(e) => {
                            // ENOSPC half way: leave no nameless or headerless entry.
                            let _ = rustix::fs::unlinkat(&*dir, entry, AtFlags::empty());
                            self.remove_side_file(&dir, &enc);
                            return Err(e);
                        }
                    }
                }
                Err(rustix::io::Errno::EXIST) if flags & libc::O_EXCL == 0 => {
                    let file = Self::open_backing(&dir, entry, flags)?;
                    let ino = self.nodes.read().fuse_ino(fstat(&file)?.ino);
                    let c = self.open_header(ino, &file, &backing)?;
                    (file, c)
                }
                Err(e) => return Err(rerrno(e)),
            };
            let attr = self.enter(parent, &dir, &enc)?;
            self.ciphers.opened(attr.ino.0, cipher);
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
            let size = {
                let _guard = self.lock(ino.0).read();
                self.attr(None, &fstat(&open.file)?).size
            };
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            if end > size {
                self.truncate(ino, Some(fh), end)?;
            }
            Ok(())
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
