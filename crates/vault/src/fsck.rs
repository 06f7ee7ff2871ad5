//! Authenticates every name, block, symlink target and xattr of a vault and
//! lists what fails. [`fsck`] changes nothing; [`repair`] also cuts the last
//! blocks that a crash tore (format §6.5), and nothing else.
//!
//! Each directory is reached through a handle opened from its parent's, and
//! named by the short path `/proc/self/fd/N/.`, so a backing path longer
//! than PATH_MAX (encrypted names are ~1.5x the plaintext) is checked too.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use serde::Serialize;

use crate::content::{ContentFile, TornTail};
use crate::names::{BackingName, classify};
use crate::{ContentError, MountLock, Vault};

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
    /// What [`repair`] changed: torn tails it cut. Not problems any more.
    pub repaired: Vec<Problem>,
    /// The generation of the checkpoint that ends a format 2 repair:
    /// what is reported to the vault's key authorities with reason 6
    /// (docs/format.md §16.17.1).
    #[serde(skip)]
    pub finished: Option<crate::witness::DurableGeneration>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// Path in the backing directory (relative to the vault root).
    pub backing: PathBuf,
    /// Plaintext path, where the names above it could be decrypted.
    pub plain: Option<PathBuf>,
    pub kind: ProblemKind,
    pub what: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// Fails authentication or has an impossible form: damage or tampering.
    Corrupt,
    /// A last block that a crash tore in the middle of a write (format
    /// §6.5); [`repair`] cuts it back to the last complete block.
    Torn,
    /// Worth a line, not damage: something the mount never reads that a
    /// crash can leave (format 2 only, [`crate::fsck2`]).
    Note,
}

/// Whether torn tails are only reported, or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Check,
    Repair,
}

impl FsckReport {
    /// No problem but notes.
    pub fn is_clean(&self) -> bool {
        self.damage() == 0
    }

    /// Problems that are not notes.
    pub fn damage(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.kind != ProblemKind::Note)
            .count()
    }
}

/// Checks every name, block, symlink and xattr of `vault`, changing
/// nothing. `config_problems` are what
/// [`crate::LockedVault::config_problems`] said *before* the unlock (which
/// repairs a damaged or stale copy, and would hide it).
pub fn fsck(vault: &Vault, config_problems: Vec<String>) -> FsckReport {
    run(vault, config_problems, Pass::Check)
}

/// As [`fsck`], and cuts every torn tail it finds back to the last complete
/// block, listing each in [`FsckReport::repaired`]. The mount lock proves
/// that no mount process writes the files meanwhile (a file being appended
/// to looks torn for a moment).
pub fn repair(vault: &Vault, _unmounted: &MountLock, config_problems: Vec<String>) -> FsckReport {
    run(vault, config_problems, Pass::Repair)
}

fn run(vault: &Vault, config_problems: Vec<String>, pass: Pass) -> FsckReport {
    let mut report = FsckReport::default();
    let root = vault.root().to_path_buf();
    let corrupt = |backing: PathBuf, plain: Option<PathBuf>, what: String| Problem {
        backing,
        plain,
        kind: ProblemKind::Corrupt,
        what,
    };
    if vault.config().format == crate::VERSION_2 {
        // Its backing directory is no tree of encrypted names: a walk
        // would call every file foreign. `crate::fsck2` checks it.
        report.problems.push(corrupt(
            PathBuf::from("."),
            None,
            "a format 2 vault: checked by fsck2::check, with the vault unmounted".into(),
        ));
        return report;
    }
    for problem in config_problems {
        report
            .problems
            .push(corrupt(PathBuf::from("."), None, problem));
    }
    if let Err(e) = vault.keys().names.read_root_attr(&root) {
        report.problems.push(corrupt(
            PathBuf::from(crate::root_attr::ROOT_ATTR_FILE),
            None,
            format!("mount root's mode and owner: {e}"),
        ));
    }
    match open_dir(rustix::fs::CWD, root.as_os_str()) {
        Ok(handle) => walk(
            vault,
            &root,
            &handle,
            Path::new(""),
            Some(PathBuf::from("/")),
            pass,
            &mut report,
        ),
        Err(e) => report.problems.push(corrupt(
            PathBuf::from("."),
            Some(PathBuf::from("/")),
            format!("cannot list: {e}"),
        )),
    }
    report
}

fn open_dir(parent: impl AsFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `handle` is the backing directory `rel`.
fn walk(
    vault: &Vault,
    root: &Path,
    handle: &OwnedFd,
    rel: &Path,
    plain: Option<PathBuf>,
    pass: Pass,
    report: &mut FsckReport,
) {
    report.directories += 1;
    let dir = crate::xattr::path_at(handle, OsStr::new("."));
    let mut found: Vec<Problem> = Vec::new();
    let mut problem =
        |kind: ProblemKind, backing: PathBuf, plain: Option<PathBuf>, what: String| {
            found.push(Problem {
                backing,
                plain,
                kind,
                what,
            });
        };
    let corrupt = ProblemKind::Corrupt;
    let dir_id = match crate::names::read_dir_id(&dir) {
        Ok(id) => Some(id),
        Err(e) => {
            problem(
                corrupt,
                rel.to_path_buf(),
                plain.clone(),
                format!("directory id: {e}"),
            );
            None
        }
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            problem(
                corrupt,
                rel.to_path_buf(),
                plain,
                format!("cannot list: {e}"),
            );
            report.problems.extend(found);
            return;
        }
    };
    let mut subdirs: Vec<(OsString, PathBuf, Option<PathBuf>)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let backing_rel = rel.join(&name);
        let kind = classify(&name);
        if matches!(kind, BackingName::Control) {
            continue;
        }
        if matches!(kind, BackingName::Foreign) {
            problem(
                corrupt,
                backing_rel,
                None,
                "not a name atrest wrote (a foreign file in the vault)".into(),
            );
            continue;
        }
        let plain_name: Option<OsString> = match dir_id {
            Some(id) => match vault.keys().names.decrypt_entry(&dir, &id, &name) {
                Ok(n) => n,
                Err(e) => {
                    problem(corrupt, backing_rel.clone(), None, format!("name: {e}"));
                    None
                }
            },
            None => None,
        };
        let plain_path = plain.as_ref().zip(plain_name).map(|(p, n)| p.join(n));
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let mut errs: Vec<(ProblemKind, String)> = Vec::new();
        if file_type.is_dir() {
            subdirs.push((name.clone(), backing_rel.clone(), plain_path.clone()));
        } else if file_type.is_file() {
            report.files += 1;
            match check_file(vault, &dir.join(&name), pass) {
                Ok((bytes, Tail::Intact)) => report.bytes += bytes,
                Ok((bytes, Tail::Torn(tear))) => {
                    report.bytes += bytes;
                    errs.push((
                        ProblemKind::Torn,
                        format!(
                            "the last block was torn by a crash during a write (the backing \
                             file ends {} bytes into it); `atrest fsck --repair` cuts it back \
                             to the last complete block, at {bytes} plaintext bytes",
                            tear.dropped()
                        ),
                    ));
                }
                Ok((bytes, Tail::Cut(tear))) => {
                    report.bytes += bytes;
                    report.repaired.push(Problem {
                        backing: backing_rel.clone(),
                        plain: plain_path.clone(),
                        kind: ProblemKind::Torn,
                        what: format!(
                            "cut the last block, torn by a crash: {} backing bytes dropped, \
                             the file now ends at {bytes} plaintext bytes",
                            tear.dropped()
                        ),
                    });
                }
                Err(e) => errs.push((corrupt, format!("contents: {e}"))),
            }
        } else if file_type.is_symlink() {
            report.symlinks += 1;
            let check = vault.keys().names.read_symlink(root, &dir.join(&name));
            if let Err(e) = check {
                errs.push((corrupt, format!("symlink target: {e}")));
            }
        }
        if !file_type.is_symlink() {
            for e in check_xattrs(vault, &dir.join(&name)) {
                errs.push((corrupt, e));
            }
        }
        for (kind, what) in errs {
            problem(kind, backing_rel.clone(), plain_path.clone(), what);
        }
    }
    report.problems.extend(found);
    for (name, sub, plain) in subdirs {
        match open_dir(handle, &name) {
            Ok(sub_handle) => walk(vault, root, &sub_handle, &sub, plain, pass, report),
            Err(e) => report.problems.push(Problem {
                backing: sub,
                plain,
                kind: ProblemKind::Corrupt,
                what: format!("cannot list: {e}"),
            }),
        }
    }
}

/// How a file ends.
enum Tail {
    Intact,
    /// Torn by a crash, left as it is.
    Torn(TornTail),
    /// Torn by a crash, and cut back to the last complete block.
    Cut(TornTail),
}

/// Authenticates every block (up to a torn tail); returns the plaintext
/// size (without a torn tail) and how the file ends.
fn check_file(vault: &Vault, path: &Path, pass: Pass) -> Result<(u64, Tail), ContentError> {
    let file = File::open(path)?;
    let Some(cipher) = vault.keys().content.read_header(&file)? else {
        return Ok((0, Tail::Intact));
    };
    let content = ContentFile {
        file: &file,
        cipher: &cipher,
    };
    let tail = match content.torn_tail()? {
        None => Tail::Intact,
        Some(tear) if pass == Pass::Check => Tail::Torn(tear),
        Some(_) => {
            let cut = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(ContentError::from)
                .and_then(|writable| {
                    ContentFile {
                        file: &writable,
                        cipher: &cipher,
                    }
                    .cut_torn_tail()
                })
                .map_err(|e| {
                    ContentError::Io(io::Error::other(format!(
                        "the last block was torn by a crash, and cutting it failed: {e}"
                    )))
                })?;
            cut.map_or(Tail::Intact, Tail::Cut)
        }
    };
    let size = match &tail {
        Tail::Torn(tear) => tear.plaintext_len,
        Tail::Intact | Tail::Cut(_) => content.plaintext_len()?,
    };
    let chunk = 256 * cipher.layout().block;
    let mut offset = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        content.read_at(offset, len as usize)?;
        offset += chunk;
    }
    Ok((size, tail))
}

fn check_xattrs(vault: &Vault, path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let names = match crate::xattr::list(path) {
        Ok(n) => n,
        Err(_) => return out,
    };
    for stored in names {
        match vault.keys().names.decrypt_xattr_name(&stored) {
            Ok(None) => {}
            Err(e) => out.push(format!("xattr: {e}")),
            Ok(Some(_)) => {
                let check = crate::xattr::get(path, &stored)
                    .map_err(ContentError::from)
                    .and_then(|v| vault.keys().names.decrypt_xattr_value(&stored, &v));
                if let Err(e) = check {
                    out.push(format!("xattr value: {e}"));
                }
            }
        }
    }
    out
}
