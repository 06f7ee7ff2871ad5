//! `atrest fsck` of a format 2 vault (docs/format.md §16.18): opens the
//! metadata store as a mount does (recovery, §16.16: a store that does not
//! open is the one finding, naming what failed), then walks every object
//! from the root. Every record and page it reads authenticates on the way
//! (the store refuses any other), xattr pages and their value blobs
//! included; every block of every regular file is
//! read and opened against its map entry; kinds, directory parents and
//! link counts are checked against the entries that name each object;
//! objects no entry names, and the data files under `objects/`, are
//! accounted for.
//!
//! What is damage ([`ProblemKind::Corrupt`], exit 4) and what is a note
//! ([`ProblemKind::Note`], exit 0): anything the mount would return as
//! `EIO` or refuse, a wrong count, an unreachable object that was not
//! unlinked while open, and anything under `objects/` atrest never writes
//! (another name, not a regular file) is damage. A data file of no live
//! object, bytes past a data file's last mapped block, and an object
//! unlinked while open when its mount stopped are notes: a crash can leave
//! each of them, and the mount never reads them.
//!
//! It changes nothing beyond what opening the store as a mount does (its
//! recovery after a crash, and a `MOUNT` log record) and, when it finds
//! no damage after a recovered crash, the checkpoint that sets the
//! superblock's state back from *recovered*; so it needs the vault
//! unmounted: the [`MountLock`] proves it.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use atrest_meta::log::LOG_DIR;
use atrest_meta::pager::META_FILE;
use atrest_meta::record::{ObjectHead, ObjectKind, ROOT_ID, Timestamp, blocks_for};
use atrest_meta::superblock::State;
use atrest_meta::{FsError, Location, MetaError, PageUsage, Store, data_file_name};

use crate::config::{BACKUP_FILE, CONFIG_FILE};
use crate::fsck::{FsckReport, Problem, ProblemKind};
use crate::layout2::BLOCK;
use crate::lock::LOCK_FILE;
use crate::migrate::MIGRATE_DIR;
use crate::names::{DIRID_FILE, LONG_LINK_DIR, LONG_PREFIX};
use crate::root_attr::ROOT_ATTR_FILE;
use crate::{ContentKey2, Contents2, MountLock, Vault};

/// Entries read from a directory at a time.
const BATCH: usize = 1024;

/// Checks the format 2 `vault`. `config_problems` are what
/// [`crate::LockedVault::config_problems`] said before the unlock.
pub fn check(vault: &Vault, unmounted: &MountLock, config_problems: Vec<String>) -> FsckReport {
    run(vault, unmounted, config_problems, false)
}

/// `fsck --repair` of the format 2 `vault` (§16.18): checks it, then drops
/// the entries naming objects whose records are lost (failed or free) and
/// frees those records' page, sets failed blocks of regular files to
/// holes, frees orphans of a stopped mount, and corrects wrong `nlink`s
/// and directory sizes (each a logged `REPAIR` record), removes data files
/// of no object and cuts bytes past a data file's last block, and ends
/// with a checkpoint, so the vault's sequence only grows. What it does
/// not repair (other pages of `atrest.meta`, names, kinds, parents) stays
/// damage, and says so. The repaired findings move to
/// [`FsckReport::repaired`].
pub fn repair(vault: &Vault, unmounted: &MountLock, config_problems: Vec<String>) -> FsckReport {
    run(vault, unmounted, config_problems, true)
}

fn run(
    vault: &Vault,
    _unmounted: &MountLock,
    config_problems: Vec<String>,
    repair: bool,
) -> FsckReport {
    let mut report = FsckReport::default();
    for problem in config_problems {
        report.problems.push(Problem {
            backing: PathBuf::from("."),
            plain: None,
            kind: ProblemKind::Corrupt,
            what: problem,
        });
    }
    let Contents2 { store, content } = match vault.open_format_2() {
        Ok(contents) => contents,
        Err(e) => {
            report.problems.push(Problem {
                backing: PathBuf::from("atrest.meta"),
                plain: None,
                kind: ProblemKind::Corrupt,
                what: format!("the vault's metadata cannot be opened: {e}"),
            });
            return report;
        }
    };
    let mut checker = Checker {
        store,
        content,
        report,
        names: HashMap::new(),
        reached: HashMap::new(),
        sizes: HashMap::new(),
        lost: HashMap::new(),
        fixes: Vec::new(),
        pages_unknown: false,
    };
    if let Some(recovery) = checker.store.recovery() {
        checker.note(
            "atrest.log",
            None,
            format!("the vault was not unmounted cleanly; recovered at this check: {recovery}"),
        );
    }
    if checker.store.superblock().state == State::Recovered {
        checker.note(
            "atrest.meta",
            None,
            "a crash was recovered (at this check or a mount since the last complete one): \
             writes not fsync'ed before it may be lost"
                .into(),
        );
    }
    checker.walk();
    checker.unreachable();
    checker.pages();
    checker.data_files(&vault.root().join("objects"));
    checker.backing_root(vault.root());
    if repair {
        checker.repair();
    }
    checker.close(repair);
    checker.report
}

/// What `--repair` does about one finding.
enum Fix {
    /// The entries of a directory naming an object whose record is lost
    /// are dropped.
    DropEntries { dir: u64, id: u64 },
    /// The page of the object table holding a record that fails is
    /// dropped (its records freed).
    FreeLost(u64),
    /// A wrong `nlink` is set to what the entries say.
    Nlink { id: u64, nlink: u32 },
    /// A directory's wrong `size` is set to its number of entries.
    DirectorySize { id: u64, entries: u64 },
    /// Failed blocks of a regular file become holes.
    Holes { id: u64, blocks: Vec<u64> },
    /// An orphan of a stopped mount is freed.
    FreeOrphan(u64),
    /// The data file of no object is removed.
    Remove { id: u64, path: PathBuf },
    /// Bytes past a data file's last block are cut.
    Trim { path: PathBuf, len: u64 },
    /// The bitmap is corrected as the page usage says (`None`: with the
    /// finding before, which holds the usage).
    Pages(Option<PageUsage>),
    /// A file atrest wrote and a crash left unfinished (a config copy's
    /// temporary file) is removed.
    RemoveLeftover(PathBuf),
}

#[allow(
    clippy::disallowed_methods,
    reason = "the informational time of fsck's checkpoint, as a mount's"
)]
fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}

/// Entries of one directory that name lost objects.
#[derive(Default, Clone, Copy)]
struct Lost {
    entries: u64,
    subdirectories: u32,
}

struct Checker {
    store: Store,
    content: ContentKey2,
    report: FsckReport,
    /// Entries naming each object.
    names: HashMap<u64, u32>,
    /// Objects reached from the root, with a path that names them.
    reached: HashMap<u64, PathBuf>,
    /// Regular files reached: their authenticated size.
    sizes: HashMap<u64, u64>,
    /// Per directory, the entries `--repair` drops (they name lost
    /// objects): how many, and how many of them say directory.
    lost: HashMap<u64, Lost>,
    /// What `--repair` may do, with the index of its finding.
    fixes: Vec<(usize, Fix)>,
    /// A page failed on the way through the bitmap check: what it hid
    /// is not known yet.
    pages_unknown: bool,
}

impl Checker {
    fn push(&mut self, kind: ProblemKind, backing: &str, plain: Option<&Path>, what: String) {
        self.report.problems.push(Problem {
            backing: PathBuf::from(backing),
            plain: plain.map(Path::to_path_buf),
            kind,
            what,
        });
    }

    fn corrupt(&mut self, backing: &str, plain: Option<&Path>, what: String) {
        self.push(ProblemKind::Corrupt, backing, plain, what);
    }

    fn note(&mut self, backing: &str, plain: Option<&Path>, what: String) {
        self.push(ProblemKind::Note, backing, plain, what);
    }

    /// `fix` repairs the finding just pushed.
    fn fix(&mut self, fix: Fix) {
        self.fixes.push((self.report.problems.len() - 1, fix));
    }

    /// Applies the fixes; each finding repaired moves to `repaired`.
    fn repair(&mut self) {
        let mut done = Vec::new();
        for (problem, fix) in std::mem::take(&mut self.fixes) {
            let result = match fix {
                Fix::DropEntries { dir, id } => {
                    match self.store.repair_drop_entries(dir, id, now()) {
                        // Dropped with an earlier entry of the same object.
                        Err(FsError::NotFound) => Ok(()),
                        other => other.map_err(|e| e.to_string()),
                    }
                }
                Fix::FreeLost(id) => match self.store.getattr(id) {
                    // Freed with an earlier record of the same page.
                    Err(FsError::NotFound) => Ok(()),
                    _ => self
                        .store
                        .repair_free_lost(id, now())
                        .map_err(|e| e.to_string()),
                },
                Fix::Nlink { id, nlink } => self
                    .store
                    .repair_nlink(id, nlink, now())
                    .map_err(|e| e.to_string()),
                Fix::DirectorySize { id, entries } => self
                    .store
                    .repair_directory_size(id, entries, now())
                    .map_err(|e| e.to_string()),
                Fix::Holes { id, blocks } => blocks
                    .into_iter()
                    .try_for_each(|n| self.store.repair_block_hole(id, n, now()))
                    .map_err(|e| e.to_string()),
                Fix::FreeOrphan(id) => self
                    .store
                    .repair_free_orphan(id, now())
                    .map_err(|e| e.to_string()),
                Fix::Remove { id, path } => match self.store.getattr(id) {
                    Err(FsError::NotFound) => fs::remove_file(&path).map_err(|e| e.to_string()),
                    _ => Err(format!("object {id} may be live; left in place")),
                },
                Fix::Pages(None) => Ok(()),
                Fix::Pages(Some(usage)) => self
                    .store
                    .repair_page_usage(&usage)
                    .map_err(|e| e.to_string()),
                Fix::RemoveLeftover(path) => fs::remove_file(&path).map_err(|e| e.to_string()),
                Fix::Trim { path, len } => fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => done.push(problem),
                Err(e) => {
                    let backing = self.report.problems[problem].backing.clone();
                    self.corrupt(
                        &backing.to_string_lossy(),
                        None,
                        format!("--repair failed: {e}"),
                    );
                }
            }
        }
        if self.pages_unknown {
            self.free_pages_of_lost_records();
        }
        let problems = std::mem::take(&mut self.report.problems);
        for (i, p) in problems.into_iter().enumerate() {
            if done.contains(&i) {
                self.report.repaired.push(p);
            } else {
                self.report.problems.push(p);
            }
        }
        if !self.report.is_clean() {
            self.note(
                "atrest.meta",
                None,
                "fsck --repair does not repair the damage above (pages of atrest.meta other \
                 than object records, names, kinds, parents, unreachable objects, files in the \
                 backing directory atrest did not write): restore the objects it names from a \
                 backup, or remove them through the mount; move foreign files out of the vault"
                    .into(),
            );
        }
    }

    /// The pages only lost records referenced (their directory trees,
    /// block maps, xattr pages) lay under a page that failed, so the check
    /// could not call them unreferenced: once the repairs are
    /// checkpointed the walk is complete, and what it finds unreferenced
    /// is freed by the repair's last checkpoint.
    fn free_pages_of_lost_records(&mut self) {
        if let Err(e) = self.store.checkpoint(now()) {
            self.corrupt(META_FILE, None, format!("--repair failed: {e}"));
            return;
        }
        let usage = match self.store.page_usage() {
            Ok(usage) => usage,
            Err(e) => {
                self.corrupt(META_FILE, None, format!("--repair failed: {e}"));
                return;
            }
        };
        let leaked = usage.leaked();
        if leaked.is_empty() {
            return;
        }
        match self.store.repair_page_usage(&usage) {
            Ok(()) => self.report.repaired.push(Problem {
                backing: PathBuf::from(META_FILE),
                plain: None,
                kind: ProblemKind::Note,
                what: format!(
                    "{} only the lost records referenced, freed: {}",
                    pages_phrase(leaked.len()),
                    page_list(&leaked)
                ),
            }),
            Err(e) => self.corrupt(META_FILE, None, format!("--repair failed: {e}")),
        }
    }

    /// A complete check that found no damage after a recovered crash
    /// sets the superblock's state back (§16.18), with a checkpoint that
    /// also marks the vault clean, as an unmount does; a repair always
    /// ends with that checkpoint.
    fn close(&mut self, repaired: bool) {
        let clean = self.report.is_clean();
        let recovered = self.store.superblock().state == State::Recovered;
        if !(repaired || clean && recovered) {
            return;
        }
        if clean {
            self.store.mark_checked();
        }
        match self.store.close(now()) {
            Ok(_) if repaired => {
                self.report.finished = Some(crate::witness::DurableGeneration::of(
                    self.store.superblock(),
                ));
            }
            Ok(_) => {}
            Err(e) => self.corrupt(
                "atrest.meta",
                None,
                format!("cannot write the checkpoint that ends the check: {e}"),
            ),
        }
    }

    /// Breadth first from the root: every directory listed, every entry's
    /// object read and checked once, link counts compared at the end.
    fn walk(&mut self) {
        let root = PathBuf::from("/");
        let head = match self.store.getattr(ROOT_ID) {
            Ok(head) => head,
            Err(e) => {
                self.corrupt(
                    "atrest.meta",
                    Some(&root),
                    format!("object {ROOT_ID} (the root): {e}"),
                );
                return;
            }
        };
        self.reached.insert(ROOT_ID, root.clone());
        self.xattrs(ROOT_ID, &root);
        let mut heads = vec![head];
        let mut queue = VecDeque::from([(ROOT_ID, root)]);
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        let mut entries: HashMap<u64, u64> = HashMap::new();
        while let Some((dir, path)) = queue.pop_front() {
            self.report.directories += 1;
            let mut after = 0;
            loop {
                let batch = match self.store.readdir(dir, after, BATCH) {
                    Ok(batch) => batch,
                    Err(e) => {
                        self.corrupt(
                            "atrest.meta",
                            Some(&path),
                            format!("directory (object {dir}): cannot list: {e}"),
                        );
                        break;
                    }
                };
                let Some(last) = batch.last() else { break };
                after = last.hash;
                for entry in batch {
                    let plain = path.join(OsStr::from_bytes(&entry.name));
                    *self.names.entry(entry.id).or_default() += 1;
                    *entries.entry(dir).or_default() += 1;
                    if entry.kind == ObjectKind::Directory {
                        *subdirs.entry(dir).or_default() += 1;
                    }
                    if self.reached.contains_key(&entry.id) {
                        if entry.kind == ObjectKind::Directory {
                            self.corrupt(
                                "atrest.meta",
                                Some(&plain),
                                format!("directory (object {}) named twice", entry.id),
                            );
                        }
                        continue;
                    }
                    let head = match self.store.getattr(entry.id) {
                        Ok(head) => head,
                        Err(e) => {
                            let lost = match &e {
                                FsError::NotFound => true,
                                FsError::Meta(m) => m.is_auth(),
                                _ => false,
                            };
                            self.corrupt(
                                "atrest.meta",
                                Some(&plain),
                                format!("object {}: {e}", entry.id),
                            );
                            if lost {
                                let counts = self.lost.entry(dir).or_default();
                                counts.entries += 1;
                                if entry.kind == ObjectKind::Directory {
                                    counts.subdirectories += 1;
                                }
                                self.fix(Fix::DropEntries { dir, id: entry.id });
                            }
                            continue;
                        }
                    };
                    self.reached.insert(entry.id, plain.clone());
                    if head.kind != entry.kind {
                        self.corrupt(
                            "atrest.meta",
                            Some(&plain),
                            format!(
                                "object {}: the entry says {:?}, the object is {:?}",
                                entry.id, entry.kind, head.kind
                            ),
                        );
                        continue;
                    }
                    self.xattrs(entry.id, &plain);
                    match head.kind {
                        ObjectKind::Directory => {
                            if head.parent != dir {
                                self.corrupt(
                                    "atrest.meta",
                                    Some(&plain),
                                    format!(
                                        "directory (object {}): its parent is object {}, \
                                         it is named in object {dir}",
                                        entry.id, head.parent
                                    ),
                                );
                            }
                            queue.push_back((entry.id, plain));
                        }
                        ObjectKind::Regular => self.file(&head, &plain),
                        ObjectKind::Symlink => {
                            self.report.symlinks += 1;
                            if let Err(e) = self.store.readlink(entry.id) {
                                self.corrupt(
                                    "atrest.meta",
                                    Some(&plain),
                                    format!("symlink (object {}): target: {e}", entry.id),
                                );
                            }
                        }
                        _ => {}
                    }
                    heads.push(head);
                }
            }
        }
        for head in heads {
            let named = self.names.get(&head.id).copied().unwrap_or(0);
            let expected = match head.kind {
                ObjectKind::Directory => 2 + subdirs.get(&head.id).copied().unwrap_or(0),
                _ => named,
            };
            // What the entries say once --repair dropped those of lost
            // objects (which also changes the directory's counts).
            let lost = self.lost.get(&head.id).copied().unwrap_or_default();
            if head.kind == ObjectKind::Directory {
                let listed = entries.get(&head.id).copied().unwrap_or(0);
                if head.size != listed {
                    self.wrong_count(
                        head.id,
                        format!(
                            "directory (object {}): size {}, entries: {listed}",
                            head.id, head.size
                        ),
                        Fix::DirectorySize {
                            id: head.id,
                            entries: listed - lost.entries,
                        },
                    );
                }
            }
            if head.nlink != expected {
                let what = if head.kind == ObjectKind::Directory {
                    "2 + its subdirectories"
                } else {
                    "entries naming it"
                };
                self.wrong_count(
                    head.id,
                    format!(
                        "object {}: nlink {}, {what}: {expected}",
                        head.id, head.nlink
                    ),
                    Fix::Nlink {
                        id: head.id,
                        nlink: expected - lost.subdirectories,
                    },
                );
            }
        }
    }

    /// A count of reached object `id` that disagrees with its entries:
    /// damage, which `fix` corrects.
    fn wrong_count(&mut self, id: u64, what: String, fix: Fix) {
        let plain = self.reached.get(&id).cloned();
        self.corrupt("atrest.meta", plain.as_deref(), what);
        self.fix(fix);
    }

    /// The extended attributes of object `id`: every xattr page and value
    /// blob read and authenticated (§16.10).
    fn xattrs(&mut self, id: u64, plain: &Path) {
        if let Err(e) = self.store.list_xattrs(id) {
            self.corrupt(
                "atrest.meta",
                Some(plain),
                format!("object {id}: extended attributes: {e}"),
            );
        }
    }

    /// Every mapped block of regular file `head` read and opened against
    /// its map entry; the first failure named, and how many failed.
    fn file(&mut self, head: &ObjectHead, plain: &Path) {
        self.report.files += 1;
        self.report.bytes += head.size;
        self.sizes.insert(head.id, head.size);
        let cipher = self.content.file_cipher(head.file_id);
        let mut failed = 0u64;
        let mut first = None;
        // Blocks --repair can set to holes: their map entry authenticated,
        // the ciphertext did not.
        let mut holes = Vec::new();
        for n in 0..blocks_for(head.size) {
            let outcome = match self.store.read_block(head.id, n) {
                Ok(None) => Ok(()),
                Ok(Some(sealed)) => cipher.open_block(n, &sealed).map(drop).map_err(|_| {
                    holes.push(n);
                    "fails authentication (changed, zeroed, older or from another file)".to_string()
                }),
                Err(e) => {
                    if matches!(e, FsError::Meta(MetaError::Auth(Location::DataFile { .. }))) {
                        holes.push(n);
                    }
                    Err(e.to_string())
                }
            };
            if let Err(e) = outcome {
                failed += 1;
                first.get_or_insert((n, e));
            }
        }
        if let Some((n, e)) = first {
            let more = if failed > 1 {
                format!(" ({failed} blocks fail)")
            } else {
                String::new()
            };
            self.corrupt(
                &data_file_name(head.id),
                Some(plain),
                format!("object {}, block {n}: {e}{more}", head.id),
            );
            if holes.len() as u64 == failed {
                self.fix(Fix::Holes {
                    id: head.id,
                    blocks: holes,
                });
            }
        }
    }

    /// Live objects no entry names: damage, unless unlinked while open
    /// when the mount stopped (an `ORPHAN`, §16.14).
    fn unreachable(&mut self) {
        let next = self.store.superblock().next_object_id;
        for id in ROOT_ID..next {
            if self.reached.contains_key(&id) {
                continue;
            }
            match self.store.getattr(id) {
                Err(FsError::NotFound) => {}
                Err(e) => {
                    let lost = matches!(&e, FsError::Meta(m) if m.is_auth());
                    self.corrupt("atrest.meta", None, format!("object {id}: {e}"));
                    if lost {
                        self.fix(Fix::FreeLost(id));
                    }
                }
                Ok(head) if head.orphan => {
                    // Its data file is its own, not unreferenced.
                    if head.kind == ObjectKind::Regular {
                        self.sizes.insert(id, head.size);
                    }
                    self.note(
                        "atrest.meta",
                        None,
                        format!(
                            "object {id}: unlinked while open when its mount stopped; never listed"
                        ),
                    );
                    self.fix(Fix::FreeOrphan(id));
                }
                Ok(_) => self.corrupt(
                    "atrest.meta",
                    None,
                    format!("object {id}: no directory entry names it (unreachable)"),
                ),
            }
        }
    }

    /// The free-page bitmap against the pages the checkpoint references
    /// (§16.11): a referenced page marked free is damage (a later
    /// checkpoint could write over it), a page marked used that nothing
    /// references a note (space lost, never read); `--repair` corrects
    /// both.
    fn pages(&mut self) {
        let usage = match self.store.page_usage() {
            Ok(usage) => usage,
            Err(e) => {
                self.corrupt(
                    META_FILE,
                    None,
                    format!("the free-page bitmap cannot be checked: {e}"),
                );
                return;
            }
        };
        self.pages_unknown = usage.failed > 0;
        let free = usage.free_but_referenced();
        let leaked = usage.leaked();
        if !free.is_empty() {
            self.corrupt(
                META_FILE,
                None,
                format!(
                    "{} in use but marked free by the bitmap (a later checkpoint could write \
                     over them): {}",
                    pages_phrase(free.len()),
                    page_list(&free)
                ),
            );
            self.fix(Fix::Pages(Some(usage.clone())));
        }
        if !leaked.is_empty() {
            self.note(
                META_FILE,
                None,
                format!(
                    "{} marked in use by the bitmap that nothing references (space lost, never \
                     read); --repair frees them: {}",
                    pages_phrase(leaked.len()),
                    page_list(&leaked)
                ),
            );
            // One repair corrects both.
            self.fix(Fix::Pages(free.is_empty().then_some(usage)));
        }
    }

    /// The names of the backing directory besides `objects/` (§16.1): the
    /// config, its copy, the lock, `atrest.meta` and the log segments in
    /// `atrest.log/`. A config copy's temporary file (a crash while a
    /// config was written) and what `atrest migrate` leaves until its
    /// clean-up is done are notes; anything else is damage, which
    /// `--repair` never removes (it may be someone's data).
    fn backing_root(&mut self, root: &Path) {
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) => {
                self.corrupt(".", None, format!("cannot list the vault directory: {e}"));
                return;
            }
        };
        let migrating = root.join(MIGRATE_DIR).is_dir();
        let mut names: Vec<_> = entries.flatten().collect();
        names.sort_by_key(fs::DirEntry::file_name);
        for entry in names {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                self.corrupt(&name, None, "cannot read its type".into());
                continue;
            };
            match &*name {
                CONFIG_FILE | BACKUP_FILE | LOCK_FILE | META_FILE if kind.is_file() => {}
                "objects" if kind.is_dir() => {}
                LOG_DIR if kind.is_dir() => self.log_dir(&entry.path()),
                MIGRATE_DIR if kind.is_dir() => self.note(
                    &name,
                    None,
                    "left by `atrest migrate`, whose clean-up is not done: run `atrest migrate` \
                     on this vault again to finish it"
                        .into(),
                ),
                "lost+found" if kind.is_dir() => self.note(
                    &name,
                    None,
                    "the backing file system's lost+found; never read".into(),
                ),
                _ if is_config_leftover(&name) && kind.is_file() => {
                    self.note(
                        &name,
                        None,
                        "a config copy a crash left half written; never read; --repair \
                         removes it"
                            .into(),
                    );
                    self.fix(Fix::RemoveLeftover(entry.path()));
                }
                _ if migrating && is_format_1_control(&name) => self.note(
                    &name,
                    None,
                    "a format 1 file `atrest migrate` removes in its clean-up: run `atrest \
                     migrate` on this vault again to finish it"
                        .into(),
                ),
                _ => self.corrupt(&name, None, foreign()),
            }
        }
    }

    /// `atrest.log/`: log segments only, named by their number.
    fn log_dir(&mut self, log: &Path) {
        let entries = match fs::read_dir(log) {
            Ok(entries) => entries,
            Err(e) => {
                self.corrupt(LOG_DIR, None, format!("cannot list: {e}"));
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let rel = format!("{LOG_DIR}/{}", name.to_string_lossy());
            let segment = parse_hex(name.as_bytes(), 16).is_some();
            if !(segment && entry.file_type().is_ok_and(|t| t.is_file())) {
                self.corrupt(&rel, None, foreign());
            }
        }
    }

    /// The backing directory's `objects/`: `hh/<16 hex digits>` regular
    /// files only; one of no reached file, or longer than its file's
    /// blocks, is a note.
    fn data_files(&mut self, objects: &Path) {
        let subdirs = match fs::read_dir(objects) {
            Ok(entries) => entries,
            Err(e) => {
                self.corrupt("objects", None, format!("cannot list: {e}"));
                return;
            }
        };
        for subdir in subdirs.flatten() {
            let name = subdir.file_name();
            let rel = format!("objects/{}", name.to_string_lossy());
            let hh = parse_hex(name.as_bytes(), 2);
            let is_dir = subdir.file_type().is_ok_and(|t| t.is_dir());
            let (Some(hh), true) = (hh, is_dir) else {
                self.corrupt(&rel, None, "not something atrest wrote".into());
                continue;
            };
            let files = match fs::read_dir(subdir.path()) {
                Ok(files) => files,
                Err(e) => {
                    self.corrupt(&rel, None, format!("cannot list: {e}"));
                    continue;
                }
            };
            for file in files.flatten() {
                let name = file.file_name();
                let rel = format!("{rel}/{}", name.to_string_lossy());
                let id = parse_hex(name.as_bytes(), 16).filter(|id| id & 0xff == hh);
                let meta = file.metadata();
                let (Some(id), Ok(meta)) = (id, meta) else {
                    self.corrupt(&rel, None, "not something atrest wrote".into());
                    continue;
                };
                if !meta.is_file() {
                    self.corrupt(&rel, None, "not something atrest wrote".into());
                    continue;
                }
                match self.sizes.get(&id) {
                    None => {
                        self.note(
                            &rel,
                            None,
                            "unreferenced: the data file of no object (planted, or left by a \
                             crash); never read"
                                .into(),
                        );
                        self.fix(Fix::Remove {
                            id,
                            path: file.path(),
                        });
                    }
                    Some(&size) if meta.len() > blocks_for(size) * BLOCK => {
                        let past = meta.len() - blocks_for(size) * BLOCK;
                        let plain = self.reached.get(&id).cloned();
                        self.note(
                            &rel,
                            plain.as_deref(),
                            format!(
                                "object {id}: {past} bytes past its last block (appended, or \
                                 left by a crash); never read"
                            ),
                        );
                        self.fix(Fix::Trim {
                            path: file.path(),
                            len: blocks_for(size) * BLOCK,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// What a name atrest does not write is: damage, left where it is.
fn foreign() -> String {
    "not something atrest wrote (planted, or put here by mistake): move it out of the vault; \
     --repair leaves it"
        .into()
}

/// The temporary file of a config copy being written (`config::write_atomic`:
/// `.<name>.<pid>.tmp`).
fn is_config_leftover(name: &str) -> bool {
    [CONFIG_FILE, BACKUP_FILE].iter().any(|file| {
        name.strip_prefix('.')
            .and_then(|n| n.strip_prefix(file))
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.strip_suffix(".tmp"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A format 1 control file in the root of the backing directory (§5, §7).
fn is_format_1_control(name: &str) -> bool {
    [DIRID_FILE, ROOT_ATTR_FILE, LONG_LINK_DIR].contains(&name) || name.starts_with(LONG_PREFIX)
}

fn pages_phrase(n: usize) -> String {
    if n == 1 {
        "1 page".into()
    } else {
        format!("{n} pages")
    }
}

/// The first pages of `pages`, with how many more.
fn page_list(pages: &[u64]) -> String {
    const SHOWN: usize = 8;
    let mut list: Vec<String> = pages.iter().take(SHOWN).map(u64::to_string).collect();
    if pages.len() > SHOWN {
        list.push(format!("and {} more", pages.len() - SHOWN));
    }
    list.join(", ")
}

/// `digits` lowercase hex digits, as atrest writes them.
fn parse_hex(name: &[u8], digits: usize) -> Option<u64> {
    if name.len() != digits || !name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(name).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use atrest_core::{Argon2Params, SecretBytes};
    use atrest_meta::{NewObject, XattrMode};

    use super::*;
    use crate::{ContentFile2, CreateOptions, Unlocker, VERSION_2};

    const NOW: Timestamp = Timestamp { secs: 5, nanos: 0 };

    fn object(kind: ObjectKind, target: &[u8]) -> NewObject {
        NewObject {
            kind,
            mode: 0o700,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: target.to_vec(),
        }
    }

    /// A new, empty format 2 vault under `dir`.
    fn empty(dir: &Path) -> Vault {
        let options = CreateOptions {
            format: VERSION_2,
            argon2: Argon2Params::INSECURE_FAST,
            ..Default::default()
        };
        let pass = Unlocker::Passphrase(SecretBytes::new(b"p".to_vec()));
        Vault::create(&dir.join("v"), options, &pass, "").unwrap().0
    }

    /// A format 2 vault holding `/d/f` (3 blocks and a hole), its hard
    /// link `/g`, a symlink `/l` and an empty `/d/e`, checkpointed; the
    /// vault, and the id of `f`.
    fn populated(dir: &Path) -> (Vault, u64) {
        let vault = empty(dir);
        let Contents2 { mut store, content } = vault.open_format_2().unwrap();
        let d = store
            .create(ROOT_ID, b"d", object(ObjectKind::Directory, b""), NOW)
            .unwrap()
            .id;
        let f = store
            .create(d, b"f", object(ObjectKind::Regular, b""), NOW)
            .unwrap()
            .id;
        store
            .create(d, b"e", object(ObjectKind::Regular, b""), NOW)
            .unwrap();
        store.link(f, ROOT_ID, b"g", NOW).unwrap();
        store
            .create(ROOT_ID, b"l", object(ObjectKind::Symlink, b"d/f"), NOW)
            .unwrap();
        let mut file = ContentFile2::new(&mut store, &content, f);
        file.write_at(0, &[7u8; 3 * 4096], NOW).unwrap();
        file.write_at(5 * 4096, b"tail", NOW).unwrap();
        file.sync().unwrap();
        store.checkpoint(NOW).unwrap();
        (vault, f)
    }

    fn run(vault: &Vault) -> FsckReport {
        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        check(vault, &lock, Vec::new())
    }

    fn findings(report: &FsckReport, kind: ProblemKind) -> Vec<String> {
        report
            .problems
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| format!("{} {:?}: {}", p.backing.display(), p.plain, p.what))
            .collect()
    }

    #[test]
    fn a_clean_vault_is_clean_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = populated(dir.path());
        let report = run(&vault);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.directories, 2);
        assert_eq!(report.files, 2, "a hard link is one file");
        assert_eq!(report.symlinks, 1);
        assert_eq!(report.bytes, 5 * 4096 + 4);
        // And again: the check leaves it as it found it.
        assert!(run(&vault).problems.is_empty());
    }

    /// A changed block is damage naming the data file, the object, the
    /// block and a plaintext path.
    #[test]
    fn a_changed_block_is_damage_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let data = vault.root().join(data_file_name(f));
        let file = fs::OpenOptions::new().write(true).open(&data).unwrap();
        file.write_all_at(b"X", 4096 + 10).unwrap();
        let report = run(&vault);
        assert!(!report.is_clean());
        let corrupt = findings(&report, ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(corrupt[0].starts_with(&data_file_name(f)), "{corrupt:?}");
        assert!(
            corrupt[0].contains(&format!("object {f}, block 1:")),
            "{corrupt:?}"
        );
        assert!(corrupt[0].contains("fails authentication"), "{corrupt:?}");
        assert!(corrupt[0].contains("/d/f") || corrupt[0].contains("/g"));
    }

    /// A data file cut short: the blocks past its end fail.
    #[test]
    fn a_truncated_data_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let data = vault.root().join(data_file_name(f));
        fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let corrupt = findings(&run(&vault), ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(corrupt[0].contains("block 1:") && corrupt[0].contains("(3 blocks fail)"));
    }

    /// Unreferenced data files and appended bytes are notes (exit 0);
    /// names and file types atrest never writes are damage.
    #[test]
    fn planted_files_are_notes_or_damage_by_what_a_crash_can_leave() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let root = vault.root().to_path_buf();
        fs::write(root.join(data_file_name(0x1_0000)), [1u8; 8192]).unwrap();
        let data = fs::OpenOptions::new()
            .append(true)
            .open(root.join(data_file_name(f)))
            .unwrap();
        data.write_all_at(&[0; 100], 0).unwrap();
        let report = run(&vault);
        assert!(report.is_clean(), "{:?}", report.problems);
        let notes = findings(&report, ProblemKind::Note);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("unreferenced")));
        assert!(
            notes
                .iter()
                .any(|n| n.contains("bytes past its last block"))
        );

        fs::write(root.join("objects/zz"), b"x").unwrap();
        fs::write(root.join("objects/00/evil"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join(data_file_name(0x200))).unwrap();
        let corrupt = findings(&run(&vault), ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 3, "{corrupt:?}");
        assert!(
            corrupt
                .iter()
                .all(|c| c.contains("not something atrest wrote"))
        );
    }

    /// A file unlinked while open when its mount stopped stays an
    /// unreachable `ORPHAN`: a note, not damage.
    #[test]
    fn an_orphan_left_by_a_stopped_mount_is_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        store.set_open(f, true, NOW).unwrap();
        store.unlink(ROOT_ID, b"g", NOW).unwrap();
        let d = store.lookup(ROOT_ID, b"d").unwrap().id;
        store.unlink(d, b"f", NOW).unwrap();
        store.checkpoint(NOW).unwrap();
        drop(store);
        let report = run(&vault);
        assert!(report.is_clean(), "{:?}", report.problems);
        let notes = findings(&report, ProblemKind::Note);
        assert!(
            notes
                .iter()
                .any(|n| n.contains(&format!("object {f}: unlinked while open"))),
            "{notes:?}"
        );
        assert_eq!(notes.len(), 1, "its data file is its own: {notes:?}");
        assert_eq!(report.files, 1, "{notes:?}");
    }

    /// A changed xattr page is damage naming the page and its object;
    /// the rest of the vault is still checked.
    #[test]
    fn a_changed_xattr_page_is_damage_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        store
            .set_xattr(f, b"user.k", &[5u8; 3000], XattrMode::Any, NOW)
            .unwrap();
        store.checkpoint(NOW).unwrap();
        let page = store.record(f).unwrap().xattrs.page().unwrap();
        drop(store);
        assert!(run(&vault).problems.is_empty());
        let meta = fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(vault.root().join("atrest.meta"))
            .unwrap();
        let mut byte = [0u8];
        meta.read_exact_at(&mut byte, page * 4096 + 100).unwrap();
        meta.write_all_at(&[byte[0] ^ 1], page * 4096 + 100)
            .unwrap();
        let report = run(&vault);
        let corrupt = findings(&report, ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(
            corrupt[0].contains(&format!("xattr page {page} of atrest.meta (object {f})")),
            "{corrupt:?}"
        );
        assert!(corrupt[0].contains("authentication failed"), "{corrupt:?}");
        assert_eq!(report.files, 2);
    }

    /// --repair: a changed block becomes a hole, a planted data file goes,
    /// an orphan of a stopped mount is freed; then nothing is left to
    /// find, the rest of the file reads as before and the sequence grew.
    #[test]
    fn repair_leaves_a_clean_vault_whose_sequence_grew() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let root = vault.root().to_path_buf();
        let data = fs::OpenOptions::new()
            .write(true)
            .open(root.join(data_file_name(f)))
            .unwrap();
        data.write_all_at(b"X", 4096 + 10).unwrap();
        let planted = root.join(data_file_name(0x1_0000));
        fs::write(&planted, [1u8; 8192]).unwrap();
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        let d = store.lookup(ROOT_ID, b"d").unwrap().id;
        let e = store.lookup(d, b"e").unwrap().id;
        store.set_open(e, true, NOW).unwrap();
        store.unlink(d, b"e", NOW).unwrap();
        store.checkpoint(NOW).unwrap();
        let before = store.superblock().generation.sequence;
        drop(store);
        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        let report = repair(&vault, &lock, Vec::new());
        drop(lock);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.repaired.len(), 3, "{:?}", report.repaired);
        assert!(!planted.exists());
        let again = run(&vault);
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        let Contents2 { mut store, content } = vault.open_format_2().unwrap();
        assert!(store.superblock().generation.sequence > before);
        assert!(matches!(store.getattr(e), Err(FsError::NotFound)));
        let mut file = ContentFile2::new(&mut store, &content, f);
        let bytes = file.read_at(0, 3 * 4096).unwrap();
        assert_eq!(&bytes[..4096], &[7u8; 4096][..]);
        assert_eq!(&bytes[4096..8192], &[0u8; 4096][..], "block 1 is a hole");
        assert_eq!(&bytes[8192..], &[7u8; 4096][..]);
    }

    /// A vault holding `/d` with 42 objects (ids 3 ..= 44; 30 a
    /// subdirectory, 31 also named `/g`, 32 holding a block) and the
    /// record page of object 31 changed: the vault and the ids whose
    /// records fail.
    fn lost_records(dir: &Path) -> (Vault, Vec<u64>) {
        let vault = empty(dir);
        let Contents2 { mut store, content } = vault.open_format_2().unwrap();
        let d = store
            .create(ROOT_ID, b"d", object(ObjectKind::Directory, b""), NOW)
            .unwrap()
            .id;
        for i in 3..=44u64 {
            let kind = if i == 30 {
                ObjectKind::Directory
            } else {
                ObjectKind::Regular
            };
            let name = format!("n{i}");
            let id = store
                .create(d, name.as_bytes(), object(kind, b""), NOW)
                .unwrap()
                .id;
            assert_eq!(id, i);
        }
        store.link(31, ROOT_ID, b"g", NOW).unwrap();
        let mut file = ContentFile2::new(&mut store, &content, 32);
        file.write_at(0, b"data", NOW).unwrap();
        file.sync().unwrap();
        store.checkpoint(NOW).unwrap();
        drop(store);
        let meta = vault.root().join("atrest.meta");
        let pages = fs::metadata(&meta).unwrap().len() / 4096;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&meta)
            .unwrap();
        let flip = |page: u64| {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, page * 4096 + 1000).unwrap();
            file.write_all_at(&[byte[0] ^ 1], page * 4096 + 1000)
                .unwrap();
        };
        for page in 2..pages {
            flip(page);
            let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
            let failed = |store: &mut Store, id| matches!(store.getattr(id), Err(FsError::Meta(e)) if e.is_auth());
            if failed(&mut store, 31) && store.getattr(ROOT_ID).is_ok() {
                let lost = (3..=44).filter(|&id| failed(&mut store, id)).collect();
                return (vault, lost);
            }
            drop(store);
            flip(page);
        }
        panic!("no page holds only the record of object 31");
    }

    /// --repair: the entries naming objects whose record page fails are
    /// dropped from their directories (`/d`'s size and nlink follow), the
    /// page freed and the lost objects' data files removed; then nothing
    /// is left to find, the rest of `/d` lists and the sequence grew.
    #[test]
    fn repair_drops_the_entries_of_lost_records() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, lost) = lost_records(dir.path());
        assert!(lost.contains(&30) && lost.contains(&32), "{lost:?}");
        let data = vault.root().join(data_file_name(32));
        assert!(data.exists());
        let report = run(&vault);
        let corrupt = findings(&report, ProblemKind::Corrupt);
        assert!(
            corrupt
                .iter()
                .any(|c| c.contains("/g") && c.contains("authentication failed")),
            "{corrupt:?}"
        );
        let Contents2 { store, .. } = vault.open_format_2().unwrap();
        let before = store.superblock().generation.sequence;
        drop(store);

        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        let report = repair(&vault, &lock, Vec::new());
        drop(lock);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert!(
            report
                .repaired
                .iter()
                .any(|p| p.plain.as_deref() == Some(Path::new("/g"))),
            "{:?}",
            report.repaired
        );
        assert!(!data.exists(), "the lost file's data file is removed");
        let again = run(&vault);
        assert!(again.problems.is_empty(), "{:?}", again.problems);

        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        assert!(store.superblock().generation.sequence > before);
        let d = store.lookup(ROOT_ID, b"d").unwrap();
        let kept = 42 - lost.len() as u64;
        assert_eq!(d.size, kept);
        assert_eq!(d.nlink, 2, "the lost subdirectory no longer counts");
        let names = store.readdir(d.id, 0, usize::MAX).unwrap();
        assert_eq!(names.len() as u64, kept);
        assert!(names.iter().all(|e| !lost.contains(&e.id)));
        assert!(matches!(
            store.lookup(ROOT_ID, b"g"),
            Err(FsError::NotFound)
        ));
        for id in lost {
            assert!(matches!(store.getattr(id), Err(FsError::NotFound)), "{id}");
        }
    }

    /// --repair: a wrong `nlink` and a directory's wrong `size` (made here
    /// with the same records, as a bug would leave them) are set to what
    /// the entries say.
    #[test]
    fn repair_corrects_wrong_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        let d = store.lookup(ROOT_ID, b"d").unwrap().id;
        store.repair_nlink(f, 5, NOW).unwrap();
        store.repair_nlink(d, 7, NOW).unwrap();
        store.repair_directory_size(d, 9, NOW).unwrap();
        store.checkpoint(NOW).unwrap();
        drop(store);
        let corrupt = findings(&run(&vault), ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 3, "{corrupt:?}");
        assert!(
            corrupt
                .iter()
                .any(|c| c.contains(&format!("object {f}: nlink 5, entries naming it: 2")))
        );
        assert!(
            corrupt
                .iter()
                .any(|c| c.contains(&format!("object {d}): size 9, entries: 2")))
        );

        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        let report = repair(&vault, &lock, Vec::new());
        drop(lock);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.repaired.len(), 3, "{:?}", report.repaired);
        assert!(run(&vault).problems.is_empty());
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        assert_eq!(store.getattr(f).unwrap().nlink, 2);
        let d = store.getattr(d).unwrap();
        assert_eq!((d.nlink, d.size), (2, 2));
    }

    /// What --repair cannot fix stays damage, and says so.
    #[test]
    fn repair_refuses_what_it_cannot_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, f) = populated(dir.path());
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        store
            .set_xattr(f, b"user.k", b"v", XattrMode::Any, NOW)
            .unwrap();
        store.checkpoint(NOW).unwrap();
        let page = store.record(f).unwrap().xattrs.page().unwrap();
        drop(store);
        let meta = fs::OpenOptions::new()
            .write(true)
            .open(vault.root().join("atrest.meta"))
            .unwrap();
        meta.write_all_at(&[0x55; 8], page * 4096 + 200).unwrap();
        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        let report = repair(&vault, &lock, Vec::new());
        drop(lock);
        assert_eq!(report.damage(), 1, "{:?}", report.problems);
        assert!(report.repaired.is_empty());
        let notes = findings(&report, ProblemKind::Note);
        assert!(
            notes.iter().any(|n| n.contains("does not repair")),
            "{notes:?}"
        );
    }

    /// A bitmap that marks a referenced page free (damage: a later
    /// checkpoint could write over it) and one page used that nothing
    /// references (a note), as a bug in the accounting would leave them:
    /// both named, both corrected by --repair, whose checkpoint leaves a
    /// bitmap that agrees with the pages in use.
    #[test]
    fn a_bitmap_that_disagrees_with_the_pages_in_use_is_found_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = populated(dir.path());
        let Contents2 { mut store, .. } = vault.open_format_2().unwrap();
        let d = store.lookup(ROOT_ID, b"d").unwrap().id;
        let atrest_meta::record::Content::Tree(root) = store.record(d).unwrap().content else {
            panic!("a directory has a tree");
        };
        let referenced = root.reference.page().unwrap();
        store.danger_unmark_page(referenced);
        let leaked = store.danger_leak_page();
        store.checkpoint(NOW).unwrap();
        drop(store);

        let report = run(&vault);
        let corrupt = findings(&report, ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(
            corrupt[0].starts_with("atrest.meta")
                && corrupt[0].contains(&format!(
                    "1 page in use but marked free by the bitmap (a later checkpoint could \
                     write over them): {referenced}"
                )),
            "{corrupt:?}"
        );
        let notes = findings(&report, ProblemKind::Note);
        assert!(
            notes.iter().any(|n| n.contains(&format!(
                "1 page marked in use by the bitmap that nothing references (space lost, never \
                 read); --repair frees them: {leaked}"
            ))),
            "{notes:?}"
        );

        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        let report = repair(&vault, &lock, Vec::new());
        drop(lock);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.repaired.len(), 2, "{:?}", report.repaired);
        let again = run(&vault);
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        let Contents2 { store, .. } = vault.open_format_2().unwrap();
        let usage = store.page_usage().unwrap();
        assert!(usage.marked.contains(&referenced) && !usage.marked.contains(&leaked));
    }

    /// Names in the backing directory outside `objects/`: a file, a
    /// symlink and a directory atrest never writes, and a name in
    /// `atrest.log/` that is no segment, are damage that --repair leaves
    /// where it is; a config copy's temporary file a crash left is a note
    /// --repair removes; what `atrest migrate` leaves until its clean-up
    /// is done is a note naming the command.
    #[test]
    fn names_in_the_backing_directory_atrest_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = populated(dir.path());
        let root = vault.root().to_path_buf();
        fs::write(root.join("evil"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("shadow")).unwrap();
        fs::create_dir(root.join("stash")).unwrap();
        fs::write(root.join("atrest.log/notes.txt"), b"x").unwrap();
        let leftover = root.join(".atrest.conf.bak.4242.tmp");
        fs::write(&leftover, b"half a config").unwrap();
        let report = run(&vault);
        let corrupt = findings(&report, ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 4, "{corrupt:?}");
        for name in ["evil ", "shadow ", "stash ", "atrest.log/notes.txt "] {
            assert!(
                corrupt
                    .iter()
                    .any(|c| c.starts_with(name) && c.contains("not something atrest wrote")),
                "{name}: {corrupt:?}"
            );
        }
        let notes = findings(&report, ProblemKind::Note);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with(".atrest.conf.bak.4242.tmp"),
            "{notes:?}"
        );

        let lock = MountLock::acquire(vault.root(), "test").unwrap();
        let report = repair(&vault, &lock, Vec::new());
        drop(lock);
        assert_eq!(report.damage(), 4, "{:?}", report.problems);
        assert_eq!(report.repaired.len(), 1, "{:?}", report.repaired);
        assert!(!leftover.exists());
        for name in ["evil", "shadow", "stash", "atrest.log/notes.txt"] {
            assert!(fs::symlink_metadata(root.join(name)).is_ok(), "{name} kept");
        }

        for name in ["evil", "shadow", "atrest.log/notes.txt"] {
            fs::remove_file(root.join(name)).unwrap();
        }
        fs::remove_dir(root.join("stash")).unwrap();
        fs::create_dir(root.join(MIGRATE_DIR)).unwrap();
        fs::write(root.join(DIRID_FILE), b"x").unwrap();
        let report = run(&vault);
        assert!(report.is_clean(), "{:?}", report.problems);
        let notes = findings(&report, ProblemKind::Note);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes.iter().all(|n| n.contains("run `atrest migrate`")),
            "{notes:?}"
        );
        fs::remove_dir(root.join(MIGRATE_DIR)).unwrap();
        let corrupt = findings(&run(&vault), ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "without atrest.migrate/: {corrupt:?}");
        assert!(corrupt[0].starts_with(DIRID_FILE), "{corrupt:?}");
    }

    /// A superblock that says *migrating* (§16.5 state 3) is refused by
    /// the mount's open and named by `fsck`, both saying to run `atrest
    /// migrate`; the migration's own open takes it.
    #[test]
    fn a_superblock_that_says_migrating_is_refused_naming_atrest_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = populated(dir.path());
        let keys = vault.keys2();
        let backing = std::sync::Arc::new(atrest_meta::DirBacking::open(vault.root()).unwrap());
        let mut store =
            Store::open_migrating(keys.meta, backing, vault.config_binding(), &keys.content)
                .unwrap();
        store.checkpoint(NOW).unwrap();
        drop(store);
        let refused = vault.open_format_2().err().unwrap().to_string();
        assert!(refused.contains("run `atrest migrate`"), "{refused}");
        let corrupt = findings(&run(&vault), ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(corrupt[0].contains("run `atrest migrate`"), "{corrupt:?}");
    }

    /// A metadata file that does not open is the one finding, naming it.
    #[test]
    fn changed_metadata_is_damage_naming_atrest_meta() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, _) = populated(dir.path());
        let meta = vault.root().join("atrest.meta");
        let mut bytes = fs::read(&meta).unwrap();
        for b in &mut bytes[..2 * 4096] {
            *b ^= 0x40;
        }
        fs::write(&meta, bytes).unwrap();
        let report = run(&vault);
        let corrupt = findings(&report, ProblemKind::Corrupt);
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(corrupt[0].starts_with("atrest.meta"), "{corrupt:?}");
        assert!(corrupt[0].contains("cannot be opened"), "{corrupt:?}");
    }
}
