//! Where a vault's metadata and data files live: the backing directory,
//! reached by names relative to it (`atrest.meta`,
//! `atrest.log/0000000000000001`, `objects/2a/000000000000002a`). The
//! store above never joins paths or follows links; the implementation on
//! the real directory opens relative to a directory fd, and the in-memory
//! one lets every layer above be tested without a disk.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

/// The backing store of one vault. Names are relative, `/`-separated,
/// without `.` or `..`.
pub trait Backing: Send + Sync {
    /// Reads at `offset`; fewer bytes than `buf` holds only at the end of
    /// the file. A file that does not exist is `NotFound`.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, creating the file (mode 0600) if
    /// it does not exist; a gap before `offset` reads as zeros.
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// The file's length, `None` if it does not exist.
    fn len(&self, name: &str) -> io::Result<Option<u64>>;
    fn set_len(&self, name: &str, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Makes the entries of directory `dir` durable (`fsync` of the
    /// directory): files created or removed in it survive a power cut.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Makes every file and directory entry of the backing durable at
    /// once (`syncfs` of the backing file system), where the backing can:
    /// `Ok(false)` if it cannot, and the caller syncs file by file.
    fn sync_all(&self) -> io::Result<bool> {
        Ok(false)
    }
    /// Allocates the space of `[offset, offset + len)` of the file,
    /// creating it (mode 0600) if it does not exist, without changing its
    /// length or what it reads as (`fallocate` with `FALLOC_FL_KEEP_SIZE`),
    /// where the backing can; a no-op where it cannot. A data file's
    /// fresh blocks are reserved so before they are written, as format 1
    /// reserves its writes: on ext4 the write then goes into allocated
    /// space rather than delayed allocation, which allocates at the
    /// `fdatasync` (plans/format-2.md, "Data path", fourth round).
    fn reserve(&self, name: &str, offset: u64, len: u64) -> io::Result<()> {
        let _ = (name, offset, len);
        Ok(())
    }
    /// Removes a file; `NotFound` if it does not exist.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of the files directly in `dir`, sorted.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;

    /// Reads exactly `buf.len()` bytes at `offset`; a short file is
    /// `UnexpectedEof`.
    fn read_exact_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(name, offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// A backing store in memory: what every test above the disk uses. Writes
/// are durable at once (the crash simulator is a separate backing).
#[derive(Default)]
pub struct MemBacking {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemBacking {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every file, to put back later (a provider's snapshot).
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.files().clone()
    }

    pub fn restore(&self, snapshot: BTreeMap<String, Vec<u8>>) {
        *self.files() = snapshot;
    }

    /// The length of a file that exists (tests).
    pub fn len_of(&self, name: &str) -> usize {
        self.files().get(name).map_or(0, Vec::len)
    }

    /// Direct access to one file's bytes, for tests that tamper with them.
    pub fn with_file<T>(&self, name: &str, f: impl FnOnce(&mut Vec<u8>) -> T) -> Option<T> {
        self.files().get_mut(name).map(f)
    }

    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock leaves consistent bytes behind.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `read_at` on a file held in memory: what of `file` lies at `offset`,
/// copied into `buf`; 0 at or past the end.
pub(crate) fn read_from(file: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let Some(rest) = file.get(start..) else {
        return 0;
    };
    let n = buf.len().min(rest.len());
    buf[..n].copy_from_slice(&rest[..n]);
    n
}

pub(crate) fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Backing for MemBacking {
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let files = self.files();
        let file = files.get(name).ok_or_else(|| not_found(name))?;
        Ok(read_from(file, offset, buf))
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::FileTooLarge)?;
        let mut files = self.files();
        let file = files.entry(name.to_owned()).or_default();
        let end = start + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(data);
        Ok(())
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.files().get(name).map(|f| f.len() as u64))
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::FileTooLarge)?;
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        file.resize(len, 0);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        if self.files().contains_key(name) {
            Ok(())
        } else {
            Err(not_found(name))
        }
    }

    fn sync_dir(&self, _dir: &str) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&self) -> io::Result<bool> {
        Ok(true)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files()
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found(name))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{dir}/");
        Ok(self
            .files()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect())
    }
}
