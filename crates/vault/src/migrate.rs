//! `atrest migrate` (docs/format.md §16.19): converts a format 1 vault to
//! format 2 in place, with the vault unmounted (its [`MountLock`] held).
//!
//! [`migrate`] walks the format 1 tree depth first, each directory's
//! backing entries in byte order, and turns every entry into an object of
//! the format 2 store at the same plaintext path: names and symlink
//! targets decrypted, every block opened and sealed again as format 2
//! (holes stay holes), modes, owners and times from the backing `lstat`,
//! hard links as more entries of one object. Every 4,096 objects or
//! 256 MiB it checkpoints the store (which syncs the data files) and only
//! then removes the format 1 sources of that batch: at no moment are both
//! copies of an object missing.
//!
//! Two config writes are the commit points: version 2 with `MIGRATING`
//! once the empty store exists (from then on a format 1 build refuses the
//! vault and a format 2 mount asks for the migration to finish), and
//! version 2 without it once the format 1 tree is gone.
//!
//! **Resuming.** The log is retired at every checkpoint, so the state to
//! resume from is the two trees themselves (§16.19, as this build does
//! it): a format 1 source still present was not removed, so either its
//! batch's checkpoint never happened or the removal was cut short. Its
//! format 2 entry, if any, is freed and the source converted again, except
//! for a hard-linked object whose format 2 link count is above the
//! source's: some of its names were removed after a durable checkpoint, so
//! it is complete, and the names left are only removed. Directory times,
//! which removing entries changes on the format 1 side, are kept in
//! `atrest.migrate/times` (synced before any removal) from the moment
//! each directory is made.
//!
//! The store's files are reached through a [`Backing`]: the vault
//! directory, or in the tests stage 1's power-loss simulator, which cuts
//! the power at any of the store's writes and syncs (`power_cuts.rs`).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atrest_meta::log::LOG_DIR;
use atrest_meta::notes::migrate_action;
use atrest_meta::pager::META_FILE;
use atrest_meta::record::{ObjectKind, ROOT_ID, Timestamp};
use atrest_meta::{Backing, FsError, MetaError, NewObject, SealedBlock, SetAttr, Store, XattrMode};

use crate::config::{Backend, VERSION, VERSION_2};
use crate::content::ContentFile;
use crate::content2::{ContentKey2, FileCipher2};
use crate::names::{BackingName, LONG_LINK_DIR, classify, read_dir_id};
use crate::root_attr::ROOT_ATTR_FILE;
use crate::{MountLock, Vault, VaultError};

/// Present from the start of a migration until its clean-up is done.
pub const MIGRATE_DIR: &str = "atrest.migrate";
/// Original directory times, in `atrest.migrate/`.
const TIMES_FILE: &str = "times";
const OBJECTS_DIR: &str = "objects";
/// The format 1 control files of the vault root that a finished
/// migration removes.
const DIR_ID_FILE: &str = "atrest.dirid";
const LONG_PREFIX: &str = "atrest.long.";
const BLOCK: usize = 4096;
/// Blocks read and sealed at a time.
const CHUNK_BLOCKS: u64 = 256;

/// How much one run converts before a checkpoint and the removal of its
/// sources (§16.19 step 4).
#[derive(Debug, Clone, Copy)]
pub struct MigrateOptions {
    /// Leave out what fails authentication (a block becomes a hole, a
    /// name or symlink an entry not made), recording a `REPAIR`, instead
    /// of stopping.
    pub drop_corrupt: bool,
    pub batch_objects: u64,
    pub batch_bytes: u64,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            drop_corrupt: false,
            batch_objects: 4096,
            batch_bytes: 256 << 20,
        }
    }
}

/// Counters a progress display reads while [`migrate`] runs.
#[derive(Debug, Default)]
pub struct MigrateProgress {
    /// Objects and plaintext bytes left to convert, once counted.
    pub total_objects: AtomicU64,
    pub total_bytes: AtomicU64,
    pub counted: AtomicBool,
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
}

/// What a run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct MigrateReport {
    /// The vault was format 2 already, with nothing left to clean up.
    pub already_format_2: bool,
    /// This run continued a migration that had been stopped.
    pub resumed: bool,
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
    pub special: u64,
    /// Plaintext bytes of the regular files converted.
    pub bytes: u64,
    /// What `drop_corrupt` left out, each also a `MIGRATE` record (action 5 or 6).
    pub dropped: Vec<Dropped>,
    /// Files whose last block a crash had torn (format §6.5): converted
    /// up to their last complete block.
    pub torn: Vec<PathBuf>,
    /// The generation of the migration's last checkpoint (state clean),
    /// when this run converted: what is reported to the vault's key
    /// authorities with reason 7 (§16.17.1).
    #[serde(skip)]
    pub finished: Option<crate::witness::DurableGeneration>,
}

#[derive(Debug, serde::Serialize)]
pub struct Dropped {
    /// Path in the backing directory (relative to the vault root).
    pub backing: PathBuf,
    /// Plaintext path, where the names above it decrypted.
    pub plain: Option<PathBuf>,
    pub what: String,
}

/// Why a migration stopped. Nothing is lost: what was not converted is
/// still in the format 1 tree, and running `atrest migrate` again resumes.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "corrupt: {}{}: {what}; the migration stopped there (nothing is lost: it is still in the format 1 tree). Restore the file through a format 1 mount, or run `atrest migrate --drop-corrupt` to leave out what fails",
        .backing.display(),
        .plain.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default()
    )]
    Corrupt {
        backing: PathBuf,
        plain: Option<PathBuf>,
        what: String,
    },
    #[error(
        "not enough free space: the migration needs about {} MiB free on the file system holding the vault and {} MiB are; free some space and run `atrest migrate` again (it resumes where it stopped)",
        .needed >> 20, .available >> 20
    )]
    NoSpace { needed: u64, available: u64 },
    #[error(
        "{}: not a file atrest wrote (a foreign file in the vault); move it out of the vault directory and run `atrest migrate` again",
        .0.display()
    )]
    Foreign(PathBuf),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the vault's format 2 metadata: {0}")]
    Meta(#[from] FsError),
}

impl From<MetaError> for MigrateError {
    fn from(e: MetaError) -> Self {
        Self::Meta(FsError::Meta(e))
    }
}

impl MigrateError {
    /// Whether the backing file system ran out of space: an `ENOSPC`
    /// anywhere in the chain, also one the format 2 store re-wrapped
    /// with the data file's name (which keeps only its kind).
    pub fn is_no_space(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>()
                && (io.raw_os_error() == Some(libc_enospc())
                    || io.kind() == io::ErrorKind::StorageFull)
            {
                return true;
            }
            source = e.source();
        }
        matches!(self, Self::NoSpace { .. })
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> MigrateError {
    let path = path.into();
    move |source| MigrateError::Io { path, source }
}

/// The time of the records and objects migrate makes.
fn now() -> Timestamp {
    Timestamp::now()
}

fn mtime_of(md: &fs::Metadata) -> Timestamp {
    Timestamp {
        secs: md.mtime(),
        nanos: u32::try_from(md.mtime_nsec()).unwrap_or(0),
    }
}

fn atime_of(md: &fs::Metadata) -> Timestamp {
    Timestamp {
        secs: md.atime(),
        nanos: u32::try_from(md.atime_nsec()).unwrap_or(0),
    }
}

/// The object kind of a backing `lstat`.
fn kind_of(md: &fs::Metadata) -> ObjectKind {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        ObjectKind::Directory
    } else if t.is_symlink() {
        ObjectKind::Symlink
    } else if t.is_fifo() {
        ObjectKind::Fifo
    } else if t.is_socket() {
        ObjectKind::Socket
    } else if t.is_char_device() {
        ObjectKind::CharDevice
    } else if t.is_block_device() {
        ObjectKind::BlockDevice
    } else {
        ObjectKind::Regular
    }
}

/// `SHA-256("atrest migrate v2" ‖ backing path)`: how `MIGRATE` records
/// name a format 1 source without its (encrypted) name.
fn path_hash(backing: &Path) -> [u8; 32] {
    atrest_core::sha256_parts(&[
        atrest_core::labels::domain::MIGRATE,
        backing.as_os_str().as_bytes(),
    ])
}

fn plain_path(plain: &[Vec<u8>]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in plain {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Converts the format 1 vault `vault` to format 2 in place, or resumes
/// a conversion that stopped; see the module documentation. `vault` is
/// unlocked (its format 1 keys read the old tree) and `_unmounted` proves
/// that no mount serves it meanwhile.
pub fn migrate(
    vault: &mut Vault,
    unmounted: &MountLock,
    options: &MigrateOptions,
    progress: &MigrateProgress,
) -> Result<MigrateReport, MigrateError> {
    let root = vault.root().to_path_buf();
    let backing = atrest_meta::DirBacking::open(&root).map_err(io_at(&root))?;
    migrate_on(vault, unmounted, options, progress, Arc::new(backing))
}

/// [`migrate`] with the format 2 store's files reached through `backing`
/// (the vault directory itself, or in tests the power-loss simulator,
/// [`atrest_meta::sim::SimDisk`]); the format 1 tree, the config and
/// `atrest.migrate/` are always the vault directory's.
fn migrate_on(
    vault: &mut Vault,
    _unmounted: &MountLock,
    options: &MigrateOptions,
    progress: &MigrateProgress,
    backing: Arc<dyn Backing>,
) -> Result<MigrateReport, MigrateError> {
    let root = vault.root().to_path_buf();
    if vault.config().backend != Backend::Fuse {
        return Err(MigrateError::Refused(format!(
            "{} is an fscrypt vault: format 2 is for FUSE vaults, and the kernel keeps encrypting this one as it is",
            root.display()
        )));
    }
    let mut report = MigrateReport::default();
    let marker = root.join(MIGRATE_DIR);
    let has_marker = exists(&marker)?;
    match (vault.config().format, vault.config().migrating) {
        (VERSION, _) => {
            let mut root_times = None;
            if has_marker {
                // Stopped before its first commit point: the config still
                // says format 1, so whatever step 2 made goes, but the
                // root's times as the first run saw them stay (making and
                // removing the skeleton changed them since).
                root_times = read_times(&marker)?.get(&ROOT_ID).copied();
                remove_skeleton(&root, backing.as_ref())?;
                report.resumed = true;
            } else if backing.len(META_FILE).map_err(io_at(&root))?.is_some() {
                return Err(MigrateError::Refused(format!(
                    "{} is a format 1 vault but holds atrest.meta, which atrest migrate did not make; move it out of the vault directory first",
                    root.display()
                )));
            }
            let scan = Scan::run(vault, options)?;
            let needed = scan.check_space(&root, options)?;
            begin(vault, &backing, root_times)
                .and_then(|()| convert(vault, &backing, options, progress, scan, &mut report))
                .map_err(|e| no_space(e, needed, &root))?;
        }
        (VERSION_2, true) => {
            report.resumed = true;
            let scan = Scan::run(vault, options)?;
            let needed = scan.check_space(&root, options)?;
            convert(vault, &backing, options, progress, scan, &mut report)
                .map_err(|e| no_space(e, needed, &root))?;
        }
        (VERSION_2, false) if has_marker => {
            report.resumed = true;
            remove_format_1_root_files(&root)?;
            remove_dir_all_synced(&root, &marker)?;
        }
        _ => report.already_format_2 = true,
    }
    Ok(report)
}

fn exists(path: &Path) -> Result<bool, MigrateError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MigrateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn remove_dir_all_synced(root: &Path, dir: &Path) -> Result<(), MigrateError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(dir)(e)),
    }
    sync_dir(root)
}

/// Removes what step 2 makes, marker last (§16.19 "Resume", config
/// still version 1): the store's files through `backing`, each removal
/// synced before the marker goes, since an `atrest.meta` that comes back
/// after a power cut without the marker is one migrate refuses to touch.
fn remove_skeleton(root: &Path, backing: &dyn Backing) -> Result<(), MigrateError> {
    let dirs = std::iter::once(LOG_DIR.to_owned())
        .chain((0..=255u8).map(|hh| format!("{OBJECTS_DIR}/{hh:02x}")));
    for dir in dirs {
        let names = match backing.list(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(root.join(&dir))(e)),
        };
        if names.is_empty() {
            continue;
        }
        for name in names {
            remove_store_file(root, backing, &format!("{dir}/{name}"))?;
        }
        backing.sync_dir(&dir).map_err(io_at(root.join(&dir)))?;
    }
    remove_store_file(root, backing, META_FILE)?;
    backing.sync_dir("").map_err(io_at(root))?;
    for name in [OBJECTS_DIR, LOG_DIR] {
        remove_dir_all_synced(root, &root.join(name))?;
    }
    remove_dir_all_synced(root, &root.join(MIGRATE_DIR))
}

fn remove_store_file(root: &Path, backing: &dyn Backing, name: &str) -> Result<(), MigrateError> {
    match backing.remove(name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(root.join(name))(e)),
    }
}

/// The records of `atrest.migrate/times`, none if it is not there.
fn read_times(marker: &Path) -> Result<HashMap<u64, DirTime>, MigrateError> {
    let path = marker.join(TIMES_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(parse_times(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Step 2: the marker with the root's times (`root_times` if a run that
/// stopped before the first commit point recorded them), the empty store,
/// then the config as version 2 with `MIGRATING`, the first commit point.
fn begin(
    vault: &mut Vault,
    backing: &Arc<dyn Backing>,
    root_times: Option<DirTime>,
) -> Result<(), MigrateError> {
    let root = vault.root().to_path_buf();
    let md = fs::symlink_metadata(&root).map_err(io_at(&root))?;
    let (atime, mtime) = root_times.unwrap_or((atime_of(&md), mtime_of(&md)));
    let marker = root.join(MIGRATE_DIR);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&marker)
        .map_err(io_at(&marker))?;
    let mut times = DirTimes::open(&marker)?;
    times.add(ROOT_ID, atime, mtime)?;
    times.sync()?;
    sync_dir(&marker)?;
    sync_dir(&root)?;
    let (mode, uid, gid) = root_owner(vault, &md)?;
    let objects = root.join(OBJECTS_DIR);
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700);
    builder.create(&objects).map_err(io_at(&objects))?;
    for hh in 0..=255u8 {
        let dir = objects.join(format!("{hh:02x}"));
        builder.create(&dir).map_err(io_at(&dir))?;
    }
    sync_dir(&objects)?;
    atrest_meta::Store::format(
        vault.keys2().meta,
        Arc::clone(backing),
        vault.config_binding(),
        (mode, uid, gid),
        now(),
    )?
    .begin_migration(now())?;
    sync_dir(&root)?;
    vault.set_format(VERSION_2, true)?;
    Ok(())
}

/// The mount root's mode and owner as format 1 shows them (§10.1): the
/// `atrest.root` record, else the backing root's own.
fn root_owner(vault: &Vault, md: &fs::Metadata) -> Result<(u16, u32, u32), MigrateError> {
    match vault.keys().names.read_root_attr(vault.root()) {
        Ok(Some(attr)) => Ok(((attr.mode & 0o7777) as u16, attr.uid, attr.gid)),
        Ok(None) => Ok(((md.mode() & 0o7777) as u16, md.uid(), md.gid())),
        Err(e) => Err(MigrateError::Corrupt {
            backing: PathBuf::from(ROOT_ATTR_FILE),
            plain: Some(PathBuf::from("/")),
            what: format!("mount root's mode and owner: {e}"),
        }),
    }
}

/// The format 1 control files of the root, once its tree is gone:
/// `atrest.root` last, so that a run that finds the root's id gone knows
/// the root's attributes were already carried over (see
/// [`Migration::finish_root`]).
fn remove_format_1_root_files(root: &Path) -> Result<(), MigrateError> {
    remove_dir_all_synced(root, &root.join(LONG_LINK_DIR))?;
    let entries = fs::read_dir(root).map_err(io_at(root))?;
    for entry in entries {
        let entry = entry.map_err(io_at(root))?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.starts_with(LONG_PREFIX) && text.ends_with(".name") {
            fs::remove_file(entry.path()).map_err(io_at(entry.path()))?;
        }
    }
    for name in [DIR_ID_FILE, ROOT_ATTR_FILE] {
        match fs::remove_file(root.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(root.join(name))(e)),
        }
    }
    sync_dir(root)
}

/// One name of a hard-linked format 1 file.
#[derive(Debug, Clone)]
struct Member {
    backing: PathBuf,
    plain: Vec<Vec<u8>>,
}

/// The walk before anything changes (§16.19 step 1): xattrs, foreign files
/// and names that do not decrypt stop it here; it counts what there is and
/// finds every name of each hard-linked file.
struct Scan {
    objects: u64,
    bytes: u64,
    links: HashMap<u64, Vec<Member>>,
}

impl Scan {
    fn run(vault: &Vault, options: &MigrateOptions) -> Result<Self, MigrateError> {
        let mut scan = Self {
            objects: 0,
            bytes: 0,
            links: HashMap::new(),
        };
        scan.dir(vault, options, Path::new(""), &[])?;
        Ok(scan)
    }

    fn dir(
        &mut self,
        vault: &Vault,
        options: &MigrateOptions,
        rel: &Path,
        plain: &[Vec<u8>],
    ) -> Result<(), MigrateError> {
        let Some(listing) = list_format_1(vault, rel, plain, options)? else {
            return Ok(());
        };
        for item in listing {
            let path = vault.root().join(&item.backing);
            let md = fs::symlink_metadata(&path).map_err(io_at(&path))?;
            let mut child = plain.to_vec();
            child.push(item.plain.into_vec());
            if md.is_dir() {
                self.dir(vault, options, &item.backing, &child)?;
            } else if md.nlink() > 1 {
                // Counted once, converted once, under its first name.
                let names = self.links.entry(md.ino()).or_default();
                let first = names.is_empty();
                names.push(Member {
                    backing: item.backing,
                    plain: child,
                });
                if !first {
                    continue;
                }
            }
            if md.is_file() {
                // Format 2 data files hold whole blocks.
                self.bytes += md.len().div_ceil(BLOCK as u64) * BLOCK as u64;
            }
            self.objects += 1;
        }
        Ok(())
    }

    /// Peak extra space: one batch of data files, then per object its
    /// record and its share of directory pages (~512 bytes) and the log
    /// records of a batch (~1 KiB), and 8 MiB for pages and segments.
    fn needed(&self, options: &MigrateOptions) -> u64 {
        self.bytes.min(options.batch_bytes) + self.objects * 1536 + (8 << 20)
    }

    /// Refuses to start without the space [`Self::needed`] says; returns it.
    fn check_space(&self, root: &Path, options: &MigrateOptions) -> Result<u64, MigrateError> {
        let needed = self.needed(options);
        let available = available_space(root)?;
        if available < needed {
            return Err(MigrateError::NoSpace { needed, available });
        }
        Ok(needed)
    }
}

/// An `ENOSPC` anywhere in `e` becomes the message that says how much
/// space the migration needs.
fn no_space(e: MigrateError, needed: u64, root: &Path) -> MigrateError {
    if e.is_no_space() && !matches!(e, MigrateError::NoSpace { .. }) {
        return MigrateError::NoSpace {
            needed,
            available: available_space(root).unwrap_or(0),
        };
    }
    e
}

fn available_space(root: &Path) -> Result<u64, MigrateError> {
    let vfs = rustix::fs::statvfs(root).map_err(|e| io_at(root)(e.into()))?;
    Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

/// One decrypted entry of a format 1 directory.
struct Item {
    backing: PathBuf,
    name: OsString,
    plain: OsString,
}

/// The entries of the format 1 directory `rel`, in byte order of their
/// backing names, decrypted. `None`: a directory whose id a cut-short
/// removal already took (it holds no entry any more). A name that fails
/// stops the migration, or is skipped with `drop_corrupt` (the walk that
/// converts records it).
fn list_format_1(
    vault: &Vault,
    rel: &Path,
    plain: &[Vec<u8>],
    options: &MigrateOptions,
) -> Result<Option<Vec<Item>>, MigrateError> {
    let dir = vault.root().join(rel);
    let mut names: Vec<OsString> = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
        let name = entry.map_err(io_at(&dir))?.file_name();
        if rel.as_os_str().is_empty() && name == OBJECTS_DIR {
            continue;
        }
        match classify(&name) {
            BackingName::Control => {}
            BackingName::Foreign => return Err(MigrateError::Foreign(rel.join(&name))),
            BackingName::Short(_) | BackingName::Long(_) => names.push(name),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let dir_id = match read_dir_id(&dir) {
        Ok(id) => id,
        Err(_) if names.is_empty() => return Ok(None),
        Err(e) => {
            return Err(MigrateError::Corrupt {
                backing: rel.join(DIR_ID_FILE),
                plain: Some(plain_path(plain)),
                what: format!("directory id: {e}"),
            });
        }
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match vault.keys().names.decrypt_entry(&dir, &dir_id, &name) {
            Ok(Some(p)) => out.push(Item {
                backing: rel.join(&name),
                name,
                plain: p,
            }),
            Ok(None) => {}
            Err(_) if options.drop_corrupt => {}
            Err(e) => {
                return Err(MigrateError::Corrupt {
                    backing: rel.join(&name),
                    plain: None,
                    what: format!("name: {e}"),
                });
            }
        }
    }
    Ok(Some(out))
}

/// The times of a directory: atime, mtime.
pub type DirTime = (Timestamp, Timestamp);

/// Bytes of one record of `atrest.migrate/times`.
pub const TIMES_RECORD: usize = 40;

/// One record of `atrest.migrate/times` (§16.19): `object id (8) ‖ atime
/// (8 + 4) ‖ mtime (8 + 4) ‖ SHA-256 of those 32 bytes, first 8`.
pub fn encode_times(id: u64, (atime, mtime): DirTime) -> [u8; TIMES_RECORD] {
    let mut record = [0u8; TIMES_RECORD];
    record[..8].copy_from_slice(&id.to_be_bytes());
    for (i, t) in [atime, mtime].into_iter().enumerate() {
        let at = 8 + 12 * i;
        record[at..at + 8].copy_from_slice(&t.secs.to_be_bytes());
        record[at + 8..at + 12].copy_from_slice(&t.nanos.to_be_bytes());
    }
    let check = atrest_core::sha256(&record[..32]);
    record[32..].copy_from_slice(&check[..8]);
    record
}

/// The records of an `atrest.migrate/times` file, the last one of each
/// object winning. A record whose check fails (a power cut inside an
/// append), nanoseconds out of range, object id 0 and a short tail are
/// ignored: these times were never authenticated, and a directory without
/// a record takes its format 1 source's.
pub fn parse_times(bytes: &[u8]) -> HashMap<u64, DirTime> {
    let mut known = HashMap::new();
    for record in bytes.chunks_exact(TIMES_RECORD) {
        let (body, check) = record.split_at(32);
        if atrest_core::sha256(body)[..8] != *check {
            continue;
        }
        let mut u64_at = [0u8; 8];
        let mut u32_at = [0u8; 4];
        let mut time = |at: usize| {
            u64_at.copy_from_slice(&body[at..at + 8]);
            u32_at.copy_from_slice(&body[at + 8..at + 12]);
            Timestamp {
                secs: i64::from_be_bytes(u64_at),
                nanos: u32::from_be_bytes(u32_at),
            }
        };
        let (atime, mtime) = (time(8), time(20));
        let id = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        if id == 0 || atime.nanos >= 1_000_000_000 || mtime.nanos >= 1_000_000_000 {
            continue;
        }
        known.insert(id, (atime, mtime));
    }
    known
}

/// `atrest.migrate/times`: the times of each format 2 directory as its
/// format 1 source had them before the migration removed anything from
/// it, appended as directories are made and synced before every batch
/// removal.
struct DirTimes {
    file: File,
    path: PathBuf,
    known: HashMap<u64, DirTime>,
    dirty: bool,
}

impl DirTimes {
    fn open(marker: &Path) -> Result<Self, MigrateError> {
        let path = marker.join(TIMES_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes).map_err(io_at(&path))?;
        Ok(Self {
            file,
            path,
            known: parse_times(&bytes),
            dirty: false,
        })
    }

    fn add(&mut self, id: u64, atime: Timestamp, mtime: Timestamp) -> Result<(), MigrateError> {
        self.file
            .write_all(&encode_times(id, (atime, mtime)))
            .map_err(io_at(&self.path))?;
        self.known.insert(id, (atime, mtime));
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), MigrateError> {
        if self.dirty {
            self.file.sync_data().map_err(io_at(&self.path))?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// A format 1 source to remove once its batch's checkpoint is durable.
enum Source {
    /// A file, symlink or special file; its long name's side file after it.
    Entry(PathBuf),
    /// A directory whose entries went before it: its id, leftover side
    /// files, then itself and its long name's side file.
    Directory(PathBuf),
    /// A directory `drop_corrupt` left out, with everything below it.
    Tree(PathBuf),
}

fn remove_entry(root: &Path, rel: &Path) -> Result<(), MigrateError> {
    let path = root.join(rel);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&path)(e)),
    }
    remove_side_file(root, rel)
}

fn remove_side_file(root: &Path, rel: &Path) -> Result<(), MigrateError> {
    let Some(name) = rel.file_name().and_then(OsStr::to_str) else {
        return Ok(());
    };
    if !name.starts_with(LONG_PREFIX) {
        return Ok(());
    }
    let side = root.join(rel).with_file_name(format!("{name}.name"));
    match fs::remove_file(&side) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(&side)(e)),
    }
}

fn remove_directory(root: &Path, rel: &Path) -> Result<(), MigrateError> {
    let path = root.join(rel);
    let entries = match fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return remove_side_file(root, rel),
        Err(e) => return Err(io_at(&path)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_at(&path))?;
        // Only control files can be left: the id, and side files of
        // entries whose removal was cut short.
        if matches!(classify(&entry.file_name()), BackingName::Control) {
            fs::remove_file(entry.path()).map_err(io_at(entry.path()))?;
        }
    }
    fs::remove_dir(&path).map_err(io_at(&path))?;
    remove_side_file(root, rel)
}

/// The conversion itself: the open store, the batch, and the sources it
/// removes when the batch is durable.
struct Migration<'a> {
    root: PathBuf,
    vault: &'a Vault,
    options: &'a MigrateOptions,
    progress: &'a MigrateProgress,
    report: &'a mut MigrateReport,
    store: Store,
    content: ContentKey2,
    times: DirTimes,
    links: HashMap<u64, Vec<Member>>,
    /// Hard-linked files (by backing inode) converted or found complete
    /// in this run: every name of theirs is in `removals`.
    linked_done: HashSet<u64>,
    removals: Vec<Source>,
    batch_objects: u64,
    batch_bytes: u64,
}

/// The store of `vault` on `backing`, recovered (§16.16), and the content
/// key that checks its blocks: not `Vault::open_format_2`, which refuses a
/// vault still `MIGRATING`. Its superblock says *migrating* until the
/// migration's last checkpoint.
fn open_store(vault: &Vault, backing: Arc<dyn Backing>) -> Result<(Store, ContentKey2), MetaError> {
    let keys = vault.keys2();
    let store = Store::open_migrating(keys.meta, backing, vault.config_binding(), &keys.content)?;
    Ok((store, keys.content))
}

/// Steps 3 to 5: convert the tree, batch by batch, then finish.
fn convert(
    vault: &mut Vault,
    backing: &Arc<dyn Backing>,
    options: &MigrateOptions,
    progress: &MigrateProgress,
    scan: Scan,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    progress
        .total_objects
        .store(scan.objects, Ordering::Relaxed);
    progress.total_bytes.store(scan.bytes, Ordering::Relaxed);
    progress.counted.store(true, Ordering::Relaxed);
    let root = vault.root().to_path_buf();
    let (store, content) = open_store(vault, Arc::clone(backing))?;
    let times = DirTimes::open(&root.join(MIGRATE_DIR))?;
    let mut m = Migration {
        root: root.clone(),
        vault,
        options,
        progress,
        report,
        store,
        content,
        times,
        links: scan.links,
        linked_done: HashSet::new(),
        removals: Vec::new(),
        batch_objects: 0,
        batch_bytes: 0,
    };
    let result = m.directory(Path::new(""), &[], ROOT_ID).and_then(|()| {
        m.commit_batch()?;
        m.finish_root()
    });
    result?;
    m.report.finished = Some(crate::witness::DurableGeneration::of(m.store.superblock()));
    remove_format_1_root_files(&root)?;
    rustix::fs::syncfs(File::open(&root).map_err(io_at(&root))?)
        .map_err(|e| io_at(&root)(e.into()))?;
    // The store's files: where they are the vault directory's, the same
    // `syncfs` again (nothing left to write); where they are not (the
    // power-loss simulator of the tests), what makes them durable.
    backing.sync_all().map_err(io_at(&root))?;
    // The second commit point: from here the vault is format 2.
    vault.set_format(VERSION_2, false)?;
    remove_dir_all_synced(&root, &root.join(MIGRATE_DIR))?;
    Ok(())
}

impl Migration<'_> {
    /// Converts the entries of the format 1 directory `rel` (plaintext
    /// path `plain`) into the format 2 directory `id`.
    fn directory(&mut self, rel: &Path, plain: &[Vec<u8>], id: u64) -> Result<(), MigrateError> {
        let Some(listing) = list_format_1(self.vault, rel, plain, self.options)? else {
            return Ok(());
        };
        if self.options.drop_corrupt {
            self.drop_failed_names(rel, plain, id, &listing)?;
        }
        for item in listing {
            let path = self.root.join(&item.backing);
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                // Another name of a hard-linked file met earlier in the
                // walk: converted with it, and gone with its batch.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path)(e)),
            };
            let mut child = plain.to_vec();
            child.push(item.plain.as_bytes().to_vec());
            if md.is_dir() {
                let sub = self.ensure_directory(id, &item.backing, &child)?;
                self.directory(&item.backing, &child, sub)?;
                self.finish_directory(sub, &item.backing, &md)?;
            } else {
                self.non_directory(id, &item, &child, &md)?;
            }
            if self.batch_objects >= self.options.batch_objects
                || self.batch_bytes >= self.options.batch_bytes
            {
                self.commit_batch()?;
            }
        }
        Ok(())
    }

    /// With `drop_corrupt`: every entry of `rel` whose name does not
    /// decrypt is recorded and removed with the batch.
    fn drop_failed_names(
        &mut self,
        rel: &Path,
        plain: &[Vec<u8>],
        id: u64,
        listing: &[Item],
    ) -> Result<(), MigrateError> {
        let kept: HashSet<&OsStr> = listing.iter().map(|i| i.name.as_os_str()).collect();
        let dir = self.root.join(rel);
        let mut failed = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let name = entry.map_err(io_at(&dir))?.file_name();
            let ours = matches!(
                classify(&name),
                BackingName::Short(_) | BackingName::Long(_)
            );
            if ours
                && !kept.contains(name.as_os_str())
                && !(rel.as_os_str().is_empty() && name == OBJECTS_DIR)
            {
                failed.push(name);
            }
        }
        for name in failed {
            let backing = rel.join(&name);
            self.dropped(
                &backing,
                Some(plain_path(plain)),
                "name fails authentication: entry left out".into(),
                migrate_action::ENTRY_DROPPED,
                id,
                0,
            )?;
            let is_dir = fs::symlink_metadata(self.root.join(&backing))
                .map_err(io_at(self.root.join(&backing)))?
                .is_dir();
            self.removals.push(if is_dir {
                Source::Tree(backing)
            } else {
                Source::Entry(backing)
            });
        }
        Ok(())
    }

    /// Records what `drop_corrupt` left out.
    fn dropped(
        &mut self,
        backing: &Path,
        plain: Option<PathBuf>,
        what: String,
        action: u8,
        object: u64,
        detail: u64,
    ) -> Result<(), MigrateError> {
        self.store
            .log_migrate(action, path_hash(backing), object, detail, now())?;
        self.report.dropped.push(Dropped {
            backing: backing.to_path_buf(),
            plain,
            what,
        });
        Ok(())
    }

    /// The format 2 directory for the format 1 directory `backing`
    /// (plaintext path `plain`), made with its mode and owner if a
    /// previous run did not make it; its times are recorded before
    /// anything is removed from the format 1 side.
    fn ensure_directory(
        &mut self,
        parent: u64,
        backing: &Path,
        plain: &[Vec<u8>],
    ) -> Result<u64, MigrateError> {
        let name = plain.last().expect("not the root");
        let md = fs::symlink_metadata(self.root.join(backing))
            .map_err(io_at(self.root.join(backing)))?;
        let id = match self.store.lookup_entry(parent, name)? {
            Some(entry) if entry.kind == ObjectKind::Directory => entry.id,
            Some(_) => {
                return Err(MigrateError::Refused(format!(
                    "{}: the format 2 tree holds a file where the format 1 tree has a directory; the vault was changed during the migration",
                    plain_path(plain).display()
                )));
            }
            None => {
                self.store
                    .create(
                        parent,
                        name,
                        NewObject {
                            kind: ObjectKind::Directory,
                            mode: (md.mode() & 0o7777) as u16,
                            uid: md.uid(),
                            gid: md.gid(),
                            rdev: 0,
                            target: Vec::new(),
                        },
                        now(),
                    )?
                    .id
            }
        };
        if !self.times.known.contains_key(&id) {
            // Its format 1 source is untouched: nothing is removed from
            // a directory before its times are synced here.
            self.times.add(id, atime_of(&md), mtime_of(&md))?;
        }
        Ok(id)
    }

    /// The format 2 directory of a hard link's other name, made (with
    /// its parents) ahead of the walk.
    fn ensure_path(&mut self, member: &Member) -> Result<u64, MigrateError> {
        let mut id = ROOT_ID;
        let mut backing = PathBuf::new();
        let above = member.plain.len() - 1;
        for (i, component) in member.backing.components().take(above).enumerate() {
            backing.push(component);
            id = self.ensure_directory(id, &backing, &member.plain[..=i])?;
        }
        Ok(id)
    }

    /// The format 2 parent of `member`, if every directory above it exists.
    fn find_parent(&mut self, member: &Member) -> Result<Option<u64>, MigrateError> {
        let mut id = ROOT_ID;
        for name in &member.plain[..member.plain.len() - 1] {
            match self.store.lookup_entry(id, name)? {
                Some(entry) if entry.kind == ObjectKind::Directory => id = entry.id,
                _ => return Ok(None),
            }
        }
        Ok(Some(id))
    }

    /// Times, mode and owner of a converted directory, set after its
    /// entries (which change its times); its source goes with the batch.
    fn finish_directory(
        &mut self,
        id: u64,
        backing: &Path,
        md: &fs::Metadata,
    ) -> Result<(), MigrateError> {
        self.copy_xattrs(backing, &[], id)?;
        let (atime, mtime) = self
            .times
            .known
            .get(&id)
            .copied()
            .unwrap_or((atime_of(md), mtime_of(md)));
        self.store.setattr(
            id,
            &SetAttr {
                mode: Some((md.mode() & 0o7777) as u16),
                uid: Some(md.uid()),
                gid: Some(md.gid()),
                atime: Some(atime),
                mtime: Some(mtime),
            },
            now(),
        )?;
        self.store.log_migrate(
            migrate_action::DIRECTORY_DONE,
            path_hash(backing),
            id,
            md.ino(),
            now(),
        )?;
        self.report.directories += 1;
        self.count(0);
        self.removals.push(Source::Directory(backing.to_path_buf()));
        Ok(())
    }

    fn count(&mut self, bytes: u64) {
        self.batch_objects += 1;
        self.batch_bytes += bytes;
        self.progress.objects.fetch_add(1, Ordering::Relaxed);
        self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A file, symlink or special file, with every other name it has.
    fn non_directory(
        &mut self,
        parent: u64,
        item: &Item,
        plain: &[Vec<u8>],
        md: &fs::Metadata,
    ) -> Result<(), MigrateError> {
        let name = plain.last().expect("a name");
        if md.nlink() > 1 && self.linked_done.contains(&md.ino()) {
            return Ok(());
        }
        let members = self.links.get(&md.ino()).cloned().unwrap_or_else(|| {
            vec![Member {
                backing: item.backing.clone(),
                plain: plain.to_vec(),
            }]
        });
        if let Some(entry) = self.store.lookup_entry(parent, name)? {
            if entry.kind == ObjectKind::Directory {
                return Err(MigrateError::Refused(format!(
                    "{}: the format 2 tree holds a directory where the format 1 tree has a file; the vault was changed during the migration",
                    plain_path(plain).display()
                )));
            }
            let head = self.store.getattr(entry.id)?;
            if u64::from(head.nlink) > md.nlink() {
                // Names of it were removed after a durable checkpoint: it
                // is complete, and the names left only go.
                self.linked_done.insert(md.ino());
                for m in &members {
                    self.removals.push(Source::Entry(m.backing.clone()));
                }
                return Ok(());
            }
        }
        // Converted again from scratch: whatever a stopped run made of it
        // is freed first (its data may be partial).
        for m in &members {
            if let Some(p) = self.find_parent(m)?
                && self
                    .store
                    .lookup_entry(p, m.plain.last().expect("a name"))?
                    .is_some()
            {
                self.store
                    .unlink(p, m.plain.last().expect("a name"), now())?;
            }
        }
        let Some(id) = self.make(parent, item, plain, md)? else {
            self.removals.push(Source::Entry(item.backing.clone()));
            return Ok(());
        };
        for m in &members {
            if m.backing != item.backing {
                let p = self.ensure_path(m)?;
                self.store
                    .link(id, p, m.plain.last().expect("a name"), now())?;
            }
            self.store.log_migrate(
                migrate_action::FILE_DONE,
                path_hash(&m.backing),
                id,
                md.ino(),
                now(),
            )?;
            self.removals.push(Source::Entry(m.backing.clone()));
        }
        if md.nlink() > 1 {
            self.linked_done.insert(md.ino());
        }
        Ok(())
    }

    /// Makes the object of one format 1 entry, contents and attributes
    /// included. `None`: `drop_corrupt` left it out.
    fn make(
        &mut self,
        parent: u64,
        item: &Item,
        plain: &[Vec<u8>],
        md: &fs::Metadata,
    ) -> Result<Option<u64>, MigrateError> {
        let name = plain.last().expect("a name");
        let path = self.root.join(&item.backing);
        let kind = kind_of(md);
        let mut target = Vec::new();
        let mut source = None;
        match kind {
            ObjectKind::Symlink => match self.vault.keys().names.read_symlink(&self.root, &path) {
                Ok(t) => target = t.into_vec(),
                Err(e) => {
                    return self.corrupt_entry(
                        &item.backing,
                        plain,
                        parent,
                        format!("symlink target: {e}"),
                    );
                }
            },
            ObjectKind::Regular => {
                let file = File::open(&path).map_err(io_at(&path))?;
                match self.vault.keys().content.read_header(&file) {
                    Ok(cipher) => source = Some((file, cipher)),
                    Err(e) => {
                        return self.corrupt_entry(
                            &item.backing,
                            plain,
                            parent,
                            format!("file header: {e}"),
                        );
                    }
                }
            }
            _ => {}
        }
        let head = self.store.create(
            parent,
            name,
            NewObject {
                kind,
                mode: (md.mode() & 0o7777) as u16,
                uid: md.uid(),
                gid: md.gid(),
                rdev: md.rdev(),
                target,
            },
            now(),
        )?;
        let mut bytes = 0;
        if let Some((file, cipher)) = source {
            if let Some(cipher) = cipher {
                bytes = self.copy_contents(
                    &item.backing,
                    plain,
                    head.id,
                    head.file_id,
                    &file,
                    &cipher,
                )?;
            }
            self.report.files += 1;
            self.report.bytes += bytes;
        } else if kind == ObjectKind::Symlink {
            self.report.symlinks += 1;
        } else {
            self.report.special += 1;
        }
        if kind != ObjectKind::Symlink {
            self.copy_xattrs(&item.backing, plain, head.id)?;
        }
        self.store.setattr(
            head.id,
            &SetAttr {
                mode: None,
                uid: None,
                gid: None,
                atime: Some(atime_of(md)),
                mtime: Some(mtime_of(md)),
            },
            now(),
        )?;
        self.count(bytes);
        Ok(Some(head.id))
    }

    /// Copies the user xattrs of the format 1 entry at `backing` (names
    /// and values decrypted, format §9) onto object `id`; backing xattrs
    /// that are not atrest's are left alone. Setting is idempotent, so a
    /// resumed run copies them again. One that fails authentication stops
    /// the migration, or with `drop_corrupt` is left out (and noted).
    fn copy_xattrs(
        &mut self,
        backing: &Path,
        plain: &[Vec<u8>],
        id: u64,
    ) -> Result<(), MigrateError> {
        let path = self.root.join(backing);
        let stored_names = match crate::xattr::list(&path) {
            Ok(names) => names,
            // A file system without xattrs holds none.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
                return Ok(());
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        for stored in stored_names {
            let names = &self.vault.keys().names;
            let opened = names
                .decrypt_xattr_name(&stored)
                .and_then(|name| match name {
                    None => Ok(None),
                    Some(name) => {
                        let sealed =
                            crate::xattr::get(&path, &stored).map_err(crate::ContentError::Io)?;
                        Ok(Some((name, names.decrypt_xattr_value(&stored, &sealed)?)))
                    }
                });
            match opened {
                Ok(None) => {}
                Ok(Some((name, value))) => {
                    let value = zeroize::Zeroizing::new(value);
                    self.store
                        .set_xattr(id, name.as_bytes(), &value, XattrMode::Any, now())?;
                }
                Err(crate::ContentError::Io(e)) => return Err(io_at(&path)(e)),
                Err(e) if self.options.drop_corrupt => {
                    self.dropped(
                        backing,
                        (!plain.is_empty()).then(|| plain_path(plain)),
                        format!("an xattr: {e}: left out"),
                        migrate_action::ENTRY_DROPPED,
                        id,
                        0,
                    )?;
                }
                Err(e) => {
                    return Err(MigrateError::Corrupt {
                        backing: backing.to_path_buf(),
                        plain: (!plain.is_empty()).then(|| plain_path(plain)),
                        what: format!("an xattr: {e}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// A name, symlink target or header that fails: the migration stops,
    /// or with `drop_corrupt` the entry is left out (`None`).
    fn corrupt_entry(
        &mut self,
        backing: &Path,
        plain: &[Vec<u8>],
        parent: u64,
        what: String,
    ) -> Result<Option<u64>, MigrateError> {
        if !self.options.drop_corrupt {
            return Err(MigrateError::Corrupt {
                backing: backing.to_path_buf(),
                plain: Some(plain_path(plain)),
                what,
            });
        }
        self.dropped(
            backing,
            Some(plain_path(plain)),
            format!("{what}: entry left out"),
            migrate_action::ENTRY_DROPPED,
            parent,
            0,
        )?;
        Ok(None)
    }

    /// Reads, opens and seals again every block of a format 1 file into
    /// object `id` (fresh writes to its data file); all-zero blocks
    /// (format 1 holes, §6.3) stay holes. Returns the plaintext size.
    fn copy_contents(
        &mut self,
        backing: &Path,
        plain: &[Vec<u8>],
        id: u64,
        file_id: [u8; 16],
        file: &File,
        cipher: &crate::FileCipher,
    ) -> Result<u64, MigrateError> {
        let source = ContentFile { file, cipher };
        let corrupt = |what: String| MigrateError::Corrupt {
            backing: backing.to_path_buf(),
            plain: Some(plain_path(plain)),
            what,
        };
        let size = match source.torn_tail() {
            Ok(Some(tear)) => {
                // Never acknowledged: a format 1 mount cuts it too.
                self.report.torn.push(plain_path(plain));
                tear.plaintext_len
            }
            Ok(None) => source
                .plaintext_len()
                .map_err(|e| corrupt(format!("contents: {e}")))?,
            Err(crate::ContentError::Io(e)) => return Err(io_at(self.root.join(backing))(e)),
            Err(e) => return Err(corrupt(format!("contents: {e}"))),
        };
        if size == 0 {
            return Ok(0);
        }
        let layout = cipher.layout();
        let sealer: FileCipher2 = self.content.file_cipher(file_id);
        let blocks = size.div_ceil(layout.block);
        let mut n = 0;
        while n < blocks {
            let last = (n + CHUNK_BLOCKS).min(blocks);
            let start = layout.block_offset(n);
            let stop = layout.ciphertext_size(size).min(layout.block_offset(last));
            let mut sealed = vec![0u8; (stop - start) as usize];
            file.read_exact_at(&mut sealed, start)
                .map_err(io_at(self.root.join(backing)))?;
            let mut run: Vec<SealedBlock> = Vec::new();
            let mut run_start = n;
            for (i, chunk) in sealed
                .chunks_mut(layout.sealed_block() as usize)
                .enumerate()
            {
                let b = n + i as u64;
                let hole = chunk.iter().all(|&x| x == 0);
                let opened = if hole {
                    None
                } else {
                    match cipher.open_block(b, chunk) {
                        Ok(p) => {
                            let mut block = zeroize::Zeroizing::new(vec![0u8; BLOCK]);
                            block[..p.len()].copy_from_slice(p);
                            Some(sealer.seal_block(b, &block))
                        }
                        Err(e) if self.options.drop_corrupt => {
                            self.dropped(
                                backing,
                                Some(plain_path(plain)),
                                format!("block {b}: {e}: left a hole (reads as zeros)"),
                                migrate_action::BLOCK_DROPPED,
                                id,
                                b,
                            )?;
                            None
                        }
                        Err(e) => return Err(corrupt(format!("contents: {e}"))),
                    }
                };
                match opened {
                    Some(block) => {
                        if run.is_empty() {
                            run_start = b;
                        }
                        run.push(block);
                    }
                    None => {
                        if !run.is_empty() {
                            self.store.write_blocks(id, run_start, &run, size, now())?;
                            run.clear();
                        }
                    }
                }
            }
            if !run.is_empty() {
                self.store.write_blocks(id, run_start, &run, size, now())?;
            }
            n = last;
        }
        if self.store.getattr(id)?.size < size {
            // Ends in holes, or is nothing but holes.
            self.store.truncate(id, size, None, now())?;
        }
        Ok(size)
    }

    /// Checkpoint (the data files synced with it), then the batch's
    /// sources go (§16.19 step 4).
    fn commit_batch(&mut self) -> Result<(), MigrateError> {
        self.times.sync()?;
        self.store.checkpoint(now())?;
        let removed = self.removals.len() as u64;
        for source in std::mem::take(&mut self.removals) {
            match source {
                Source::Entry(rel) => remove_entry(&self.root, &rel)?,
                Source::Directory(rel) => remove_directory(&self.root, &rel)?,
                Source::Tree(rel) => {
                    let path = self.root.join(&rel);
                    match fs::remove_dir_all(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_at(&path)(e)),
                    }
                    remove_side_file(&self.root, &rel)?;
                }
            }
        }
        self.store
            .log_migrate(migrate_action::BATCH_REMOVED, [0; 32], 0, removed, now())?;
        self.batch_objects = 0;
        self.batch_bytes = 0;
        Ok(())
    }

    /// Step 5: the root's attributes as format 1 showed them, then the
    /// last checkpoint, state clean.
    fn finish_root(&mut self) -> Result<(), MigrateError> {
        if exists(&self.root.join(DIR_ID_FILE))? {
            self.root_attributes()?;
        }
        // Else a run that stopped after this step's checkpoint, while the
        // root's format 1 files went (`atrest.root` with them): the
        // checkpoint is written again, the state clean either way.
        self.store.finish_migration(now())?;
        Ok(())
    }

    /// The root's mode, owner, times and xattrs as format 1 showed them.
    fn root_attributes(&mut self) -> Result<(), MigrateError> {
        let md = fs::symlink_metadata(&self.root).map_err(io_at(&self.root))?;
        self.copy_xattrs(Path::new(""), &[], ROOT_ID)?;
        let (mode, uid, gid) = root_owner(self.vault, &md)?;
        let (atime, mtime) = self
            .times
            .known
            .get(&ROOT_ID)
            .copied()
            .unwrap_or((atime_of(&md), mtime_of(&md)));
        self.store.setattr(
            ROOT_ID,
            &SetAttr {
                mode: Some(mode),
                uid: Some(uid),
                gid: Some(gid),
                atime: Some(atime),
                mtime: Some(mtime),
            },
            now(),
        )?;
        self.store
            .log_migrate(migrate_action::FINISHED, [0; 32], ROOT_ID, 0, now())?;
        Ok(())
    }
}

#[cfg(test)]
mod power_cuts;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{EncryptedName, create_dir_id};
    use crate::{ContentFile2, Contents2, CreateOptions, LockedVault, Unlocker};
    use atrest_core::{Argon2Params, SecretBytes};

    fn pass() -> Unlocker {
        Unlocker::Passphrase(SecretBytes::new(b"migrate".to_vec()))
    }

    /// A format 1 vault written with the format 1 primitives the mount
    /// uses (no FUSE here; the e2e tests migrate vaults made by mounts).
    pub(super) struct Format1 {
        _dir: Option<tempfile::TempDir>,
        pub(super) root: PathBuf,
        pub(super) vault: Vault,
    }

    impl Format1 {
        pub(super) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut v = Self::new_in(&dir.path().join("vault"));
            v._dir = Some(dir);
            v
        }

        /// A new format 1 vault at `root`, which the caller cleans up.
        pub(super) fn new_in(root: &Path) -> Self {
            let root = root.to_path_buf();
            let options = CreateOptions {
                argon2: Argon2Params::INSECURE_FAST,
                recovery_key: false,
                ..Default::default()
            };
            let (vault, _) = Vault::create(&root, options, &pass(), "pass").unwrap();
            Self {
                _dir: None,
                root,
                vault,
            }
        }

        pub(super) fn entry(&self, dir: &Path, name: &str) -> PathBuf {
            let id = read_dir_id(dir).unwrap();
            let enc = self.vault.keys().names.encrypt_name(&id, OsStr::new(name));
            if let EncryptedName::Long { entry, full } = &enc {
                fs::write(dir.join(format!("{entry}.name")), full).unwrap();
            }
            dir.join(enc.entry())
        }

        pub(super) fn mkdir(&self, dir: &Path, name: &str) -> PathBuf {
            let path = self.entry(dir, name);
            fs::create_dir(&path).unwrap();
            create_dir_id(&path).unwrap();
            path
        }

        /// Writes `data` at each offset of `writes` (holes between).
        pub(super) fn file(&self, dir: &Path, name: &str, writes: &[(u64, &[u8])]) -> PathBuf {
            let path = self.entry(dir, name);
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            let cipher = self.vault.keys().content.write_header(&file).unwrap();
            let content = ContentFile {
                file: &file,
                cipher: &cipher,
            };
            for (offset, data) in writes {
                content.write_at(*offset, data).unwrap();
            }
            path
        }

        pub(super) fn symlink(&self, dir: &Path, name: &str, target: &str) -> PathBuf {
            let link = self.entry(dir, name);
            self.vault
                .keys()
                .names
                .create_symlink(&self.root, OsStr::new(target), &link)
                .unwrap();
            link
        }

        /// Sets xattr `name` of the backing entry at `path` as a format 1
        /// mount does (§9).
        pub(super) fn xattr(&self, path: &Path, name: &str, value: &[u8]) {
            let names = &self.vault.keys().names;
            let stored = names.encrypt_xattr_name(OsStr::new(name));
            let sealed = names.encrypt_xattr_value(&stored, value);
            crate::xattr::set(path, &stored, &sealed, rustix::fs::XattrFlags::empty()).unwrap();
        }

        fn migrate(&self, options: &MigrateOptions) -> Result<MigrateReport, MigrateError> {
            let mut vault = LockedVault::open(&self.root)
                .unwrap()
                .unlock(&pass())
                .unwrap();
            let lock = MountLock::acquire(&self.root, "test").unwrap();
            migrate(&mut vault, &lock, options, &MigrateProgress::default())
        }
    }

    /// The names in directory `dir`, sorted.
    pub(super) fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn lookup(store: &mut Store, path: &str) -> u64 {
        path.split('/')
            .filter(|c| !c.is_empty())
            .fold(ROOT_ID, |dir, name| {
                store.lookup(dir, name.as_bytes()).unwrap().id
            })
    }

    fn read(contents: &mut Contents2, path: &str) -> Vec<u8> {
        let id = lookup(&mut contents.store, path);
        let mut file = ContentFile2::new(&mut contents.store, &contents.content, id);
        let len = file.len().unwrap();
        file.read_at(0, len as usize).unwrap()
    }

    fn small_batches() -> MigrateOptions {
        MigrateOptions {
            batch_objects: 3,
            ..Default::default()
        }
    }

    /// Contents (with holes), long names, nested directories, hard links
    /// across directories and long symlinks come through, in batches of
    /// three objects; nothing of format 1 is left.
    #[test]
    fn a_format_1_tree_becomes_the_same_format_2_tree() {
        let v = Format1::new();
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let a = v.mkdir(&v.root, "a");
        let deep = v.mkdir(&a, &"d".repeat(230));
        let one = v.file(&v.root, "big", &[(0, &big[..])]);
        v.file(
            &a,
            "holes",
            &[(0, &b"start"[..]), (5 * 4096 + 7, &b"end"[..])],
        );
        v.file(&deep, "empty", &[]);
        fs::hard_link(&one, v.entry(&deep, "big-again")).unwrap();
        v.symlink(&a, "short", "../big");
        let long_target = "t/".repeat(1800);
        v.symlink(&v.root, "long", &long_target);
        let report = v.migrate(&small_batches()).unwrap();
        assert_eq!(
            (report.files, report.directories, report.symlinks),
            (3, 2, 2)
        );

        let vault = LockedVault::open(&v.root).unwrap().unlock(&pass()).unwrap();
        assert_eq!(
            (vault.config().format, vault.config().migrating),
            (VERSION_2, false)
        );
        let mut contents = vault.open_format_2().unwrap();
        assert_eq!(read(&mut contents, "/big"), big);
        let deep_path = format!("/a/{}", "d".repeat(230));
        assert_eq!(read(&mut contents, &format!("{deep_path}/big-again")), big);
        assert_eq!(
            lookup(&mut contents.store, "/big"),
            lookup(&mut contents.store, &format!("{deep_path}/big-again"))
        );
        assert_eq!(contents.store.lookup(ROOT_ID, b"big").unwrap().nlink, 2);
        let mut holes = vec![0u8; 5 * 4096 + 10];
        holes[..5].copy_from_slice(b"start");
        holes[5 * 4096 + 7..].copy_from_slice(b"end");
        assert_eq!(read(&mut contents, "/a/holes"), holes);
        let holes_id = lookup(&mut contents.store, "/a/holes");
        for n in 1..5 {
            assert_eq!(
                contents.store.map_entry(holes_id, n).unwrap(),
                atrest_meta::record::MapEntry::Hole,
                "block {n} stays a hole"
            );
        }
        assert!(read(&mut contents, &format!("{deep_path}/empty")).is_empty());
        let short = lookup(&mut contents.store, "/a/short");
        assert_eq!(contents.store.readlink(short).unwrap(), b"../big");
        let long = lookup(&mut contents.store, "/long");
        assert_eq!(
            contents.store.readlink(long).unwrap(),
            long_target.as_bytes()
        );
        assert_eq!(
            names_in(&v.root),
            [
                "atrest.conf",
                "atrest.conf.bak",
                "atrest.lock",
                "atrest.log",
                "atrest.meta",
                "objects"
            ]
        );
        drop(contents);
        let report = v.migrate(&small_batches()).unwrap();
        assert!(report.already_format_2);
    }

    /// A corrupt block stops the run after some batches went; once the
    /// block is put back the next run resumes and the tree is whole.
    #[test]
    fn a_run_stopped_by_a_corrupt_block_resumes() {
        let v = Format1::new();
        let mut files = Vec::new();
        for i in 0..12 {
            let data = vec![i as u8 + 1; 4096 * 2 + i];
            let path = v.file(&v.root, &format!("f{i:02}"), &[(0, &data[..])]);
            files.push((format!("/f{i:02}"), data, path));
        }
        let (_, _, victim) = &files[9];
        let original = fs::read(victim).unwrap();
        let mut damaged = original.clone();
        damaged[18 + 4124 + 9] ^= 1;
        fs::write(victim, &damaged).unwrap();
        let err = v.migrate(&small_batches()).unwrap_err();
        assert!(
            matches!(&err, MigrateError::Corrupt { what, .. } if what.contains("block 1")),
            "{err}"
        );
        assert!(err.to_string().contains("/f09"), "{err}");
        let locked = LockedVault::open(&v.root).unwrap();
        assert_eq!(
            (locked.config().format, locked.config().migrating),
            (VERSION_2, true)
        );
        assert_eq!(
            locked.metadata_state().unwrap().state,
            crate::MetadataStateKind::Migrating,
            "the superblock says migrating too"
        );
        let vault = locked.unlock(&pass()).unwrap();
        assert!(
            vault.open_format_2().is_err(),
            "a half-migrated vault does not mount"
        );
        drop(vault);
        fs::write(victim, &original).unwrap();
        let report = v.migrate(&small_batches()).unwrap();
        assert!(report.resumed);
        let locked = LockedVault::open(&v.root).unwrap();
        assert_eq!(
            locked.metadata_state().unwrap().state,
            crate::MetadataStateKind::Clean
        );
        let vault = locked.unlock(&pass()).unwrap();
        let mut contents = vault.open_format_2().unwrap();
        for (path, data, _) in &files {
            assert_eq!(&read(&mut contents, path), data, "{path}");
        }
        assert_eq!(contents.store.getattr(ROOT_ID).unwrap().size, 12);
    }

    /// With `drop_corrupt` a failing block becomes a hole and a failing
    /// name an entry not made; both are reported.
    #[test]
    fn drop_corrupt_leaves_holes_and_reports_them() {
        let v = Format1::new();
        let data = vec![7u8; 3 * 4096];
        let path = v.file(&v.root, "damaged", &[(0, &data[..])]);
        let mut bytes = fs::read(&path).unwrap();
        bytes[18 + 4124 + 50] ^= 0x80;
        fs::write(&path, &bytes).unwrap();
        let bad_name = v.file(&v.root, "renamed", &[(0, &b"x"[..])]);
        fs::rename(
            &bad_name,
            v.root.join("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )
        .unwrap();
        assert!(matches!(
            v.migrate(&MigrateOptions::default()),
            Err(MigrateError::Corrupt { .. })
        ));
        let report = v
            .migrate(&MigrateOptions {
                drop_corrupt: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(report.dropped.len(), 2, "{:?}", report.dropped);
        let vault = LockedVault::open(&v.root).unwrap().unlock(&pass()).unwrap();
        let mut contents = vault.open_format_2().unwrap();
        let mut expected = data.clone();
        expected[4096..8192].fill(0);
        assert_eq!(read(&mut contents, "/damaged"), expected);
        assert_eq!(contents.store.getattr(ROOT_ID).unwrap().size, 1);
    }

    fn t(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    /// An `ENOSPC` the store re-wrapped with a file name (kind kept, raw
    /// errno lost) is still "out of space"; other errors are not.
    #[test]
    fn enospc_is_recognized_through_the_store_s_wrapping() {
        let enospc = io::Error::from_raw_os_error(libc_enospc());
        let named = io::Error::new(
            enospc.kind(),
            format!("objects/02/0000000000000002: {enospc}"),
        );
        let wrapped = |source: io::Error| {
            MigrateError::from(MetaError::Io {
                what: "data file 2".into(),
                source,
            })
        };
        assert!(wrapped(named).is_no_space());
        assert!(wrapped(io::Error::from_raw_os_error(libc_enospc())).is_no_space());
        assert!(
            MigrateError::Io {
                path: PathBuf::from("x"),
                source: io::Error::from_raw_os_error(libc_enospc()),
            }
            .is_no_space()
        );
        assert!(
            !wrapped(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error()
            ))
            .is_no_space()
        );
        assert!(!wrapped(io::Error::new(io::ErrorKind::NotFound, "gone")).is_no_space());
    }

    #[test]
    fn times_round_trip_and_the_last_record_wins() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_times(7, (t(1, 2), t(3, 4))));
        bytes.extend_from_slice(&encode_times(9, (t(-5, 999_999_999), t(i64::MAX, 0))));
        bytes.extend_from_slice(&encode_times(7, (t(10, 20), t(30, 40))));
        let known = parse_times(&bytes);
        assert_eq!(known.len(), 2);
        assert_eq!(known[&7], (t(10, 20), t(30, 40)));
        assert_eq!(known[&9], (t(-5, 999_999_999), t(i64::MAX, 0)));
    }

    #[test]
    fn a_torn_or_changed_record_is_ignored() {
        let good = encode_times(3, (t(1, 1), t(2, 2)));
        let mut bytes = good.to_vec();
        let mut changed = encode_times(4, (t(5, 5), t(6, 6)));
        changed[10] ^= 1;
        bytes.extend_from_slice(&changed);
        // A record half written: zeros where the power cut it.
        let mut torn = encode_times(5, (t(7, 7), t(8, 8)));
        torn[20..].fill(0);
        bytes.extend_from_slice(&torn);
        bytes.extend_from_slice(&good[..17]);
        let known = parse_times(&bytes);
        assert_eq!(known.len(), 1);
        assert_eq!(known[&3], (t(1, 1), t(2, 2)));
        assert!(parse_times(&[0u8; TIMES_RECORD * 3]).is_empty());
        let bad_nanos = encode_times(6, (t(1, 1_000_000_000), t(2, 2)));
        assert!(parse_times(&bad_nanos).is_empty());
    }
}
