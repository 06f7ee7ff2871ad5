//! `atrest doctor`: what still lies in the clear around the vaults on this
//! machine, and how to fix it.
//!
//! Two layers. [`facts`] gathers what the checks need from /proc, /sys,
//! /etc, the vaults, the host state dir and the vaults' key authorities
//! (one short request to each, all at once); it is the only part that
//! reads the machine or the network. The check families ([`system`],
//! [`data`], [`files`], [`authority`]) are pure functions of those facts,
//! so each check is unit-tested without root.

pub mod authority;
pub mod data;
pub mod facts;
pub mod files;
pub mod system;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::cli::DoctorArgs;

/// How bad a finding is; the exit code is the worst one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One problem: what was found, why it matters, and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`swap-unencrypted`, `key-file-mode`, ...).
    pub id: &'static str,
    pub severity: Severity,
    /// What was found: paths, devices, values.
    pub found: String,
    /// Why it matters, in one line.
    pub why: String,
    /// The command or config change that removes the finding.
    pub fix: String,
}

/// Runs every check family on `facts`, worst first.
pub fn evaluate(facts: &facts::Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(system::check(facts));
    out.extend(data::check(facts));
    out.extend(files::check(facts));
    out.extend(authority::check(facts));
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(b.id)));
    out
}

/// 0 nothing or only info, 1 warnings, 2 something critical.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Critical) => 2,
        Some(Severity::Warning) => 1,
        _ => 0,
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let facts = facts::gather(&args.vaults)?;
    let findings = evaluate(&facts);
    if args.json {
        for f in &findings {
            println!("{}", serde_json::to_string(f)?);
        }
    } else if findings.is_empty() {
        println!("atrest doctor: no findings");
    } else {
        for f in &findings {
            println!("[{}] {}", f.severity.name(), f.id);
            println!("  found: {}", f.found);
            println!("  why:   {}", f.why);
            println!("  fix:   {}", f.fix);
        }
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        println!(
            "{} critical, {} warning(s), {} info",
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Info)
        );
    }
    Ok(ExitCode::from(exit_code(&findings)))
}

/// Whether `path` is `root` or inside it (by components, not by string).
pub fn is_under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

/// Where `path`'s data is kept, as far as the checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Inside a mounted atrest vault or an fscrypt vault directory.
    Vault(PathBuf),
    /// On a dm-crypt device, tmpfs, ramfs or zram: not in the clear on disk.
    Encrypted(String),
    /// On the named block device or file system, unencrypted.
    Clear(String),
}

/// Classifies `path` with the facts' mounts and vaults.
pub fn storage_of(facts: &facts::Facts, path: &Path) -> Storage {
    for v in &facts.vault_roots {
        if is_under(path, v) {
            return Storage::Vault(v.clone());
        }
    }
    match facts.mount_of(path) {
        Some(m) if m.fstype == "fuse.atrest" => Storage::Vault(m.target.clone()),
        Some(m) if facts.is_encrypted_fs(m) => Storage::Encrypted(m.source.clone()),
        Some(m) => Storage::Clear(format!(
            "{} ({}, mounted on {})",
            m.source,
            m.fstype,
            m.target.display()
        )),
        None => Storage::Clear("an unknown device".into()),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::facts::{Facts, Mount};
    use std::path::PathBuf;

    pub fn mount(source: &str, target: &str, fstype: &str, options: &str) -> Mount {
        Mount {
            source: source.into(),
            target: PathBuf::from(target),
            fstype: fstype.into(),
            options: options.into(),
        }
    }

    /// A machine with a clear root file system and nothing else.
    pub fn plain() -> Facts {
        Facts {
            mounts: vec![mount("/dev/vda1", "/", "ext4", "rw,relatime")],
            ..Facts::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity) -> Finding {
        Finding {
            id: "x",
            severity,
            found: String::new(),
            why: String::new(),
            fix: String::new(),
        }
    }

    #[test]
    fn exit_code_is_the_worst_severity() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[finding(Severity::Info)]), 0);
        assert_eq!(
            exit_code(&[finding(Severity::Info), finding(Severity::Warning)]),
            1
        );
        assert_eq!(
            exit_code(&[finding(Severity::Critical), finding(Severity::Warning)]),
            2
        );
    }

    #[test]
    fn storage_follows_the_longest_mount_and_vaults() {
        let mut f = testutil::plain();
        f.mounts.push(testutil::mount(
            "/srv/data.enc",
            "/srv/data",
            "fuse.atrest",
            "rw",
        ));
        f.mounts
            .push(testutil::mount("tmpfs", "/tmp", "tmpfs", "rw"));
        f.mounts
            .push(testutil::mount("/dev/mapper/c", "/secure", "ext4", "rw"));
        f.encrypted_devices.insert("/dev/mapper/c".into());
        f.vault_roots.push(PathBuf::from("/home/k"));
        assert_eq!(
            storage_of(&f, Path::new("/srv/data/pg")),
            Storage::Vault("/srv/data".into())
        );
        assert!(matches!(
            storage_of(&f, Path::new("/srv/database")),
            Storage::Clear(_)
        ));
        assert!(matches!(
            storage_of(&f, Path::new("/tmp/x")),
            Storage::Encrypted(_)
        ));
        assert!(matches!(
            storage_of(&f, Path::new("/secure/a")),
            Storage::Encrypted(_)
        ));
        assert_eq!(
            storage_of(&f, Path::new("/home/k/x")),
            Storage::Vault("/home/k".into())
        );
    }
}
