//! Authenticates every name, block, symlink target and xattr of a vault and
//! lists what fails, without changing anything.
//!
//! Each directory is reached through a handle opened from its parent's, and
//! named by the short path `/proc/self/fd/N/.`, so a backing path longer
//! than PATH_MAX (encrypted names are ~1.5x the plaintext) is checked too.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use serde::Serialize;

use crate::content::ContentFile;
use crate::names::{BackingName, classify};
use crate::{ContentError, Vault};

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// Path in the backing directory (relative to the vault root).
    pub backing: PathBuf,
    /// Plaintext path, where the names above it could be decrypted.
    pub plain: Option<PathBuf>,
    pub what: String,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every name, block, symlink and xattr of `vault`. `config_problems`
/// are what [`crate::LockedVault::config_problems`] said *before* the unlock
/// (which repairs a damaged or stale copy, and would hide it).
pub fn fsck(vault: &Vault, config_problems: Vec<String>) -> FsckReport {
    let mut report = FsckReport::default();
    let root = vault.root().to_path_buf();
    for problem in config_problems {
        report.problems.push(Problem {
            backing: PathBuf::from("."),
            plain: None,
            what: problem,
        });
    }
    if let Err(e) = vault.keys().names.read_root_attr(&root) {
        report.problems.push(Problem {
            backing: PathBuf::from(crate::root_attr::ROOT_ATTR_FILE),
            plain: None,
            what: format!("mount root's mode and owner: {e}"),
        });
    }
    match open_dir(rustix::fs::CWD, root.as_os_str()) {
        Ok(handle) => walk(
            vault,
            &root,
            &handle,
            Path::new(""),
            Some(PathBuf::from("/")),
            &mut report,
        ),
        Err(e) => report.problems.push(Problem {
            backing: PathBuf::from("."),
            plain: Some(PathBuf::from("/")),
            what: format!("cannot list: {e}"),
        }),
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
    report: &mut FsckReport,
) {
    report.directories += 1;
    let dir = crate::xattr::path_at(handle, OsStr::new("."));
    let mut found: Vec<Problem> = Vec::new();
    let mut problem = |backing: PathBuf, plain: Option<PathBuf>, what: String| {
        found.push(Problem {
            backing,
            plain,
            what,
        });
    };
    let dir_id = match crate::names::read_dir_id(&dir) {
        Ok(id) => Some(id),
        Err(e) => {
            problem(
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
            problem(rel.to_path_buf(), plain, format!("cannot list: {e}"));
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
                    problem(backing_rel.clone(), None, format!("name: {e}"));
                    None
                }
            },
            None => None,
        };
        let plain_path = plain.as_ref().zip(plain_name).map(|(p, n)| p.join(n));
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let report_err = |what: String| (backing_rel.clone(), plain_path.clone(), what);
        let mut errs: Vec<(PathBuf, Option<PathBuf>, String)> = Vec::new();
        if file_type.is_dir() {
            subdirs.push((name.clone(), backing_rel.clone(), plain_path.clone()));
        } else if file_type.is_file() {
            report.files += 1;
            match check_file(vault, &dir.join(&name)) {
                Ok(bytes) => report.bytes += bytes,
                Err(e) => errs.push(report_err(format!("contents: {e}"))),
            }
        } else if file_type.is_symlink() {
            report.symlinks += 1;
            let check = vault.keys().names.read_symlink(root, &dir.join(&name));
            if let Err(e) = check {
                errs.push(report_err(format!("symlink target: {e}")));
            }
        }
        if !file_type.is_symlink() {
            for e in check_xattrs(vault, &dir.join(&name)) {
                errs.push(report_err(e));
            }
        }
        for (backing, plain, what) in errs {
            problem(backing, plain, what);
        }
    }
    report.problems.extend(found);
    for (name, sub, plain) in subdirs {
        match open_dir(handle, &name) {
            Ok(sub_handle) => walk(vault, root, &sub_handle, &sub, plain, report),
            Err(e) => report.problems.push(Problem {
                backing: sub,
                plain,
                what: format!("cannot list: {e}"),
            }),
        }
    }
}

/// Authenticates every block; returns the plaintext size.
fn check_file(vault: &Vault, path: &Path) -> Result<u64, ContentError> {
    let file = File::open(path)?;
    let Some(cipher) = vault.keys().content.read_header(&file)? else {
        return Ok(0);
    };
    let content = ContentFile {
        file: &file,
        cipher: &cipher,
    };
    let size = content.plaintext_len()?;
    let chunk = 256 * cipher.layout().block;
    let mut offset = 0;
    while offset < size {
        content.read_at(offset, chunk as usize)?;
        offset += chunk;
    }
    Ok(size)
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
