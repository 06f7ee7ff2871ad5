//! The [`Backing`] of a real vault: files under one backing directory,
//! every one opened relative to that directory's descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink or a `..`
//! planted in the backing directory by whoever controls the disk can never
//! send a read or a write outside it (the open fails with `ELOOP`/`EXDEV`).
//! Descriptors are kept open per name, up to a bound below the process's
//! descriptor limit (a vault holds a data file per regular file); past
//! it, some are closed and opened again when next used. `remove` drops
//! them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use crate::backing::Backing;

/// Files of the backing directory, opened beneath it.
pub struct DirBacking {
    root: OwnedFd,
    open: Mutex<HashMap<String, Arc<OwnedFd>>>,
    /// Descriptors kept open at most.
    keep: usize,
}

/// How many descriptors a [`DirBacking`] keeps open: a quarter of what
/// the process may open (its soft limit raised to the hard one first),
/// between 64 and 16,384.
fn descriptors_to_keep() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    (current / 4).clamp(64, 16_384) as usize
}

/// The most one `pwrite` writes. A data file's blocks sit at `4096·n`,
/// so a 1 MiB write of a stream lands 1 MiB-aligned, and ext4 (Linux
/// 6.18 here) caches it in one 1 MiB folio, into which the kernel's copy
/// cost twice the CPU per byte of 64 KiB pieces or of format 1's
/// unaligned writes (docs/plans/format-2.md, "Data path", fifth round).
/// Sixteen system calls a MiB cost less than that.
const WRITE_PIECE: usize = 64 << 10;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn invalid(name: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {why}"))
}

/// A name the store may use: relative, `/`-separated, no empty, `.` or
/// `..` component.
fn check(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid(name, "not a plain relative name"));
    }
    Ok(())
}

fn with_name(name: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{name}: {e}"))
}

impl DirBacking {
    /// Opens the backing directory `path` (which must exist and be a
    /// directory, not a symlink to one).
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(Self {
            root,
            open: Mutex::new(HashMap::new()),
            keep: descriptors_to_keep(),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<OwnedFd>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open descriptor of `name`; with `create`, the file (mode 0600)
    /// and its missing parent directories (0700) are made first.
    fn file(&self, name: &str, create: bool) -> io::Result<Arc<OwnedFd>> {
        check(name)?;
        if let Some(fd) = self.table().get(name) {
            return Ok(fd.clone());
        }
        // openat2 takes a mode only with O_CREAT.
        let (flags, mode) = if create {
            (
                OFlags::RDWR | OFlags::CLOEXEC | OFlags::CREATE,
                Mode::from_raw_mode(0o600),
            )
        } else {
            (OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        };
        let fd = match rustix::fs::openat2(&self.root, name, flags, mode, RESOLVE) {
            Ok(fd) => fd,
            // A missing parent directory.
            Err(rustix::io::Errno::NOENT) if create => {
                if let Some((parent, _)) = name.rsplit_once('/') {
                    self.make_dirs(parent)?;
                }
                rustix::fs::openat2(&self.root, name, flags, mode, RESOLVE)
                    .map_err(io::Error::from)
                    .map_err(with_name(name))?
            }
            Err(e) => return Err(with_name(name)(e.into())),
        };
        let fd = Arc::new(fd);
        let mut table = self.table();
        if table.len() >= self.keep {
            // Any eighth of them: a descriptor still in use lives on in
            // its user's `Arc`, and the next use opens the file again.
            let drop: Vec<String> = table.keys().take(self.keep / 8).cloned().collect();
            for name in drop {
                table.remove(&name);
            }
        }
        table.insert(name.to_owned(), fd.clone());
        Ok(fd)
    }

    fn make_dirs(&self, dir: &str) -> io::Result<()> {
        let mut path = String::new();
        for component in dir.split('/') {
            let parent = self.dir_fd(&path)?;
            match rustix::fs::mkdirat(&parent, component, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(with_name(dir)(e.into())),
            }
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(component);
        }
        Ok(())
    }

    /// A descriptor of directory `dir` beneath the root ("" is the root).
    fn dir_fd(&self, dir: &str) -> io::Result<OwnedFd> {
        let name = if dir.is_empty() {
            "."
        } else {
            check(dir).map(|()| dir)?
        };
        rustix::fs::openat2(
            &self.root,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(io::Error::from)
        .map_err(with_name(dir))
    }
}

impl Backing for DirBacking {
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.file(name, false)?;
        loop {
            match rustix::io::pread(fd.as_fd(), &mut *buf, offset) {
                Err(rustix::io::Errno::INTR) => continue,
                other => return other.map_err(io::Error::from).map_err(with_name(name)),
            }
        }
    }

    fn write_at(&self, name: &str, mut offset: u64, mut data: &[u8]) -> io::Result<()> {
        let fd = self.file(name, true)?;
        while !data.is_empty() {
            let piece = &data[..data.len().min(WRITE_PIECE)];
            match rustix::io::pwrite(fd.as_fd(), piece, offset) {
                Ok(0) => return Err(with_name(name)(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    data = &data[n..];
                    offset += n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(with_name(name)(e.into())),
            }
        }
        Ok(())
    }

    fn reserve(&self, name: &str, offset: u64, len: u64) -> io::Result<()> {
        let fd = self.file(name, true)?;
        loop {
            match rustix::fs::fallocate(
                fd.as_fd(),
                rustix::fs::FallocateFlags::KEEP_SIZE,
                offset,
                len,
            ) {
                // Not every backing file system can preallocate; the write
                // that follows allocates then.
                Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(with_name(name)(e.into())),
            }
        }
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        match self.file(name, false) {
            Ok(fd) => {
                let stat = rustix::fs::fstat(fd.as_fd()).map_err(io::Error::from)?;
                Ok(Some(u64::try_from(stat.st_size).unwrap_or(0)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        let fd = self.file(name, false)?;
        rustix::fs::ftruncate(fd.as_fd(), len)
            .map_err(io::Error::from)
            .map_err(with_name(name))
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let fd = self.file(name, false)?;
        rustix::fs::fdatasync(fd.as_fd())
            .map_err(io::Error::from)
            .map_err(with_name(name))
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let fd = self.dir_fd(dir)?;
        rustix::fs::fsync(&fd)
            .map_err(io::Error::from)
            .map_err(with_name(dir))
    }

    fn sync_all(&self) -> io::Result<bool> {
        rustix::fs::syncfs(&self.root)
            .map(|()| true)
            .map_err(io::Error::from)
            .map_err(with_name("syncfs of the backing directory"))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check(name)?;
        let (parent, base) = name.rsplit_once('/').unwrap_or(("", name));
        let dir = self.dir_fd(parent)?;
        self.table().remove(name);
        rustix::fs::unlinkat(&dir, base, AtFlags::empty())
            .map_err(io::Error::from)
            .map_err(with_name(name))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let fd = self.dir_fd(dir)?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).map_err(io::Error::from)? {
            let entry = entry.map_err(io::Error::from)?;
            let name = entry.file_name().to_string_lossy();
            if name != "." && name != ".." {
                names.push(name.into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing() -> (tempfile::TempDir, DirBacking) {
        let dir = tempfile::tempdir().unwrap();
        let backing = DirBacking::open(dir.path()).unwrap();
        (dir, backing)
    }

    #[test]
    fn reserve_allocates_without_changing_length_or_contents() {
        use std::os::unix::fs::MetadataExt;
        let (dir, b) = backing();
        let name = "objects/07/0000000000000007";
        b.reserve(name, 0, 1 << 20).unwrap();
        let path = dir.path().join(name);
        assert_eq!(b.len(name).unwrap(), Some(0), "created, still empty");
        b.write_at(name, 0, b"kept").unwrap();
        b.reserve(name, 4096, 8192).unwrap();
        assert_eq!(b.len(name).unwrap(), Some(4));
        let mut buf = [0u8; 4];
        b.read_exact_at(name, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"kept");
        // tmpfs and ext4 both preallocate; a file system that cannot
        // would leave st_blocks at the one written block.
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(blocks * 512 >= 8192, "space reserved: {blocks} sectors");
    }

    #[test]
    fn files_round_trip_with_parents_made_on_first_write() {
        let (dir, b) = backing();
        assert_eq!(b.len("objects/2a/000000000000002a").unwrap(), None);
        b.write_at("objects/2a/000000000000002a", 4096, b"block")
            .unwrap();
        assert_eq!(b.len("objects/2a/000000000000002a").unwrap(), Some(4101));
        let mut buf = [1u8; 4101];
        b.read_exact_at("objects/2a/000000000000002a", 0, &mut buf)
            .unwrap();
        assert!(buf[..4096].iter().all(|&x| x == 0));
        assert_eq!(&buf[4096..], b"block");
        b.sync("objects/2a/000000000000002a").unwrap();
        b.sync_dir("objects/2a").unwrap();
        assert!(b.sync_all().unwrap(), "syncfs of the backing file system");
        b.set_len("objects/2a/000000000000002a", 10).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("objects/2a/000000000000002a"))
                .unwrap()
                .len(),
            10
        );
        b.write_at("objects/2a/b", 0, b"x").unwrap();
        assert_eq!(b.list("objects/2a").unwrap(), ["000000000000002a", "b"]);
        b.remove("objects/2a/b").unwrap();
        assert_eq!(b.list("objects/2a").unwrap(), ["000000000000002a"]);
        assert_eq!(
            b.remove("objects/2a/b").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("objects/2a/000000000000002a"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    /// More files than descriptors kept: each still reads and writes,
    /// and the table stays within its bound.
    #[test]
    fn descriptors_kept_are_bounded_and_files_reopen() {
        let (_dir, mut b) = backing();
        b.keep = 16;
        for i in 0..100u8 {
            b.write_at(&format!("objects/{:02x}/f{i}", i % 4), 0, &[i; 3])
                .unwrap();
            assert!(b.table().len() <= 16, "{} kept", b.table().len());
        }
        for i in 0..100u8 {
            let mut buf = [0u8; 3];
            b.read_exact_at(&format!("objects/{:02x}/f{i}", i % 4), 0, &mut buf)
                .unwrap();
            assert_eq!(buf, [i; 3]);
            b.sync(&format!("objects/{:02x}/f{i}", i % 4)).unwrap();
        }
    }

    #[test]
    fn symlinks_and_dot_dot_never_lead_outside_the_backing_directory() {
        let (dir, b) = backing();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        // A planted symlink, as a file and as a directory on the way.
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join("atrest.meta"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("objects")).unwrap();
        let mut buf = [0u8; 7];
        assert!(b.read_at("atrest.meta", 0, &mut buf).is_err());
        assert!(b.write_at("atrest.meta", 0, b"clobber").is_err());
        assert!(b.write_at("objects/secret", 0, b"clobber").is_err());
        assert!(b.remove("objects/secret").is_err());
        assert!(b.list("objects").is_err());
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a"] {
            assert_eq!(
                b.write_at(bad, 0, b"x").unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"outside"
        );
    }
}
