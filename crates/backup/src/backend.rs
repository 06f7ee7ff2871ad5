//! Where a repository's files live. Every file is written once under a
//! name derived from its content (or random), and never changed: `put`
//! writes to a temporary name and renames, so a crash leaves either the
//! whole file or none.

use std::fs;
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{BackupError, Result};

/// The operations a repository needs from its storage.
pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;
    /// Stores `data` under `name` (`dir/file`), atomically. A file already
    /// there is kept (names are content-derived).
    fn put(&self, name: &str, data: &[u8]) -> Result<()>;
    /// Stores the concatenation of `pieces` under `name` as `put` does: a
    /// pack goes out as the buffers it was sealed in. The local and S3
    /// backends write them without joining them first (up to 16 MiB less
    /// per pack); this default joins them.
    fn put_pieces(&self, name: &str, pieces: Vec<Vec<u8>>) -> Result<()> {
        self.put(name, &pieces.concat())
    }
    fn get(&self, name: &str) -> Result<Vec<u8>>;
    /// The size of `name` in bytes, without reading it (S3: a HEAD). This
    /// default reads it whole.
    fn size(&self, name: &str) -> Result<u64> {
        self.get(name).map(|b| b.len() as u64)
    }
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Names of the files under `dir` (`data` lists `data/xx/...`), sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    fn exists(&self, name: &str) -> Result<bool>;
    fn delete(&self, name: &str) -> Result<()>;
    /// Overwrites `name`'s bytes where the store allows it, then deletes
    /// it: for a key that must be gone (a keyslot removed or shredded).
    /// What the store keeps beyond that (old object versions, file system
    /// snapshots, flash blocks not yet erased) is outside atrest's reach;
    /// docs/threat-model.md says what to do about it.
    fn destroy(&self, name: &str) -> Result<()>;
    /// How many blobs at once are worth reading from this store, and how
    /// (see [`ReadProfile`]): a local directory by default.
    fn read_profile(&self) -> ReadProfile {
        ReadProfile::LOCAL
    }
}

/// How a command that reads many blobs (restore, a run with a parent,
/// `ls`, `check`, `prune`, `mount`) reads them from a store: grouped by pack, each
/// pack's wanted blobs in a few ranged reads, several packs at once
/// (crates/backup/src/fetch.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadProfile {
    /// Ranged reads worth having in flight at once (at least one).
    pub requests_in_flight: usize,
    /// Wanted blobs of one pack at most this many bytes apart are read in
    /// one request, the bytes between them read and dropped: on a store a
    /// round trip away, a request costs more than reading this much.
    pub coalesce_gap: u64,
    /// Read a snapshot's trees ahead, level by level and pack by pack,
    /// before walking it, instead of one request per tree as the walk
    /// reaches it.
    pub read_trees_ahead: bool,
}

impl ReadProfile {
    /// A local directory: a read costs a `pread`; nothing to batch but
    /// neighbouring blobs.
    pub const LOCAL: Self = Self {
        requests_in_flight: 1,
        coalesce_gap: 64 << 10,
        read_trees_ahead: false,
    };
    /// A store a round trip away (S3): a request costs milliseconds, so
    /// requests are few, large and several at once.
    pub const REMOTE: Self = Self {
        requests_in_flight: 8,
        coalesce_gap: 1 << 20,
        read_trees_ahead: true,
    };
}

impl Backend for Box<dyn Backend> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        (**self).put(name, data)
    }
    fn put_pieces(&self, name: &str, pieces: Vec<Vec<u8>>) -> Result<()> {
        (**self).put_pieces(name, pieces)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        (**self).get(name)
    }
    fn size(&self, name: &str) -> Result<u64> {
        (**self).size(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        (**self).get_range(name, offset, len)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        (**self).list(dir)
    }
    fn exists(&self, name: &str) -> Result<bool> {
        (**self).exists(name)
    }
    fn delete(&self, name: &str) -> Result<()> {
        (**self).delete(name)
    }
    fn destroy(&self, name: &str) -> Result<()> {
        (**self).destroy(name)
    }
    fn read_profile(&self) -> ReadProfile {
        (**self).read_profile()
    }
}

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn err(&self, name: &str) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        let path = self.root.join(name).display().to_string();
        move |source| BackupError::Storage { path, source }
    }

    /// Writes `pieces` to a new temporary file, fsyncs it and renames it
    /// to `name` (then fsyncs the directory): a crash leaves the whole
    /// file or none.
    fn write_new(&self, name: &str, pieces: &mut [IoSlice<'_>]) -> Result<()> {
        let path = self.path(name);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(self.err(name))?;
        let tmp = dir.join(format!(".tmp-{}", hex(&atrest_core::random_array::<8>())));
        let mut write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            write_all_vectored(&mut f, pieces)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()
        };
        write()
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
            .map_err(self.err(name))
    }
}

/// Writes every byte of `pieces`, in order, with as few `writev` calls as
/// the writer allows (std's `Write::write_all_vectored`, not yet stable).
pub(crate) fn write_all_vectored(
    out: &mut impl Write,
    mut pieces: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    // Skips leading empty pieces, so an empty write below means no progress.
    IoSlice::advance_slices(&mut pieces, 0);
    while !pieces.is_empty() {
        match out.write_vectored(pieces) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut pieces, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.write_new(name, &mut [IoSlice::new(data)])
    }

    fn put_pieces(&self, name: &str, pieces: Vec<Vec<u8>>) -> Result<()> {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        self.write_new(name, &mut slices)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        fs::read(self.path(name)).map_err(self.err(name))
    }

    fn size(&self, name: &str) -> Result<u64> {
        fs::metadata(self.path(name))
            .map(|m| m.len())
            .map_err(self.err(name))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = fs::File::open(self.path(name))?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        read().map_err(self.err(name))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let entries = match fs::read_dir(self.path(&d)) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err(&d)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(self.err(&d))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") {
                    continue;
                }
                let full = format!("{d}/{name}");
                if entry.file_type().map_err(self.err(&full))?.is_dir() {
                    stack.push(full);
                } else {
                    out.push(full);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.path(name).exists())
    }

    fn delete(&self, name: &str) -> Result<()> {
        fs::remove_file(self.path(name)).map_err(self.err(name))
    }

    /// Zeros over the file's bytes in place, fsync'ed, then unlink and
    /// fsync the directory.
    fn destroy(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        let overwrite = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().write(true).open(&path)?;
            let len = f.metadata()?.len();
            f.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])?;
            f.sync_all()?;
            fs::remove_file(&path)?;
            fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        overwrite().map_err(self.err(name))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
