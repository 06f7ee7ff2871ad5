use std::process::ExitCode;

use anyhow::Context;
use atrest_vault::MountLock;
use atrest_vault::fsck::{FsckReport, Problem, ProblemKind};

use crate::cli::FsckArgs;
use crate::{EXIT_CORRUPT, hygiene, secrets};

pub fn run(args: FsckArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let (_, locked) = super::open_locked(&args.vault)?;
    if locked.config().backend == atrest_vault::Backend::Fscrypt {
        anyhow::bail!(
            "{} is an fscrypt vault: the kernel encrypts it and ext4/f2fs check it (e2fsck); atrest fsck checks FUSE vaults",
            args.vault.display()
        );
    }
    if locked.config().format == atrest_vault::VERSION_2 {
        return run_format_2(&args, locked);
    }
    // Taken before the unlock, so a passphrase is not asked for in vain;
    // held to the end, so no mount starts writing while files are cut.
    let lock = if args.repair {
        let holder = format!("{} (atrest fsck --repair)", std::process::id());
        Some(
            MountLock::acquire(locked.root(), &holder).with_context(|| {
                format!(
                    "fsck --repair changes files, so it needs {} unmounted (fsck without --repair only checks, also while mounted)",
                    args.vault.display()
                )
            })?,
        )
    } else {
        None
    };
    let config_problems = locked.config_problems();
    let vault = locked.unlock(&secrets::unlocker(&args.unlock)?)?;
    let report = match &lock {
        Some(lock) => atrest_vault::fsck::repair(&vault, lock, config_problems),
        None => atrest_vault::fsck::fsck(&vault, config_problems),
    };
    finish(&args, &report)
}

/// Format 2 (docs/format.md §16.18): the check opens the store as a mount
/// does (recovery after a crash), so the vault must be unmounted, with or
/// without --repair.
fn run_format_2(args: &FsckArgs, locked: atrest_vault::LockedVault) -> anyhow::Result<ExitCode> {
    // The superblock's state is read before unlock, unauthenticated: it
    // only refuses here, and the store refuses it again once it
    // authenticates (§16.5, state *migrating*).
    let superblock_migrating = locked
        .metadata_state()
        .is_some_and(|m| m.state == atrest_vault::MetadataStateKind::Migrating);
    if locked.config().migrating || superblock_migrating {
        anyhow::bail!(
            "{}: `atrest migrate` has not finished converting this vault to format 2; run `atrest migrate {}` to finish it (it resumes), then fsck",
            args.vault.display(),
            args.vault.display()
        );
    }
    let holder = if args.repair {
        format!("{} (atrest fsck --repair)", std::process::id())
    } else {
        format!("{} (atrest fsck)", std::process::id())
    };
    let lock = MountLock::acquire(locked.root(), &holder).with_context(|| {
        format!(
            "fsck of a format 2 vault opens it as a mount does (recovery after a crash), so it needs {} unmounted",
            args.vault.display()
        )
    })?;
    let config_problems = locked.config_problems();
    let vault = locked.unlock(&secrets::unlocker(&args.unlock)?)?;
    let report = if args.repair {
        atrest_vault::fsck2::repair(&vault, &lock, config_problems)
    } else {
        atrest_vault::fsck2::check(&vault, &lock, config_problems)
    };
    if let Some(generation) = report.finished.clone() {
        super::generation::report_last(&vault, generation, atrest_remote::ReportReason::Repair);
    }
    finish(args, &report)
}

fn finish(args: &FsckArgs, report: &FsckReport) -> anyhow::Result<ExitCode> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print(report);
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CORRUPT)
    })
}

fn print(report: &FsckReport) {
    let line = |label: &str, p: &Problem| {
        let plain = p
            .plain
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        println!("{label}: {}{}: {}", p.backing.display(), plain, p.what);
    };
    for p in &report.repaired {
        line("repaired", p);
    }
    for p in &report.problems {
        match p.kind {
            ProblemKind::Corrupt => line("corrupt", p),
            ProblemKind::Torn => line("torn", p),
            ProblemKind::Note => line("note", p),
        }
    }
    let mut outcome = if report.is_clean() {
        "no problems".to_string()
    } else {
        format!("{} problems", report.damage())
    };
    let notes = report.problems.len() - report.damage();
    if notes > 0 {
        outcome.push_str(&format!(", {notes} notes"));
    }
    if !report.repaired.is_empty() {
        outcome.push_str(&format!(", {} repaired", report.repaired.len()));
    }
    println!(
        "checked {} directories, {} files ({} bytes), {} symlinks: {}",
        report.directories, report.files, report.bytes, report.symlinks, outcome
    );
}
