//! `atrest migrate VAULT`: converts a format 1 FUSE vault to format 2 in
//! place (docs/format.md §16.19), with the vault unmounted; resumes a
//! migration that stopped.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use atrest_remote::ReportReason;
use atrest_vault::MountLock;
use atrest_vault::migrate::{MigrateError, MigrateOptions, MigrateProgress, MigrateReport};

use crate::cli::MigrateArgs;
use crate::{EXIT_CORRUPT, hygiene, secrets};

pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let (_, locked) = super::open_locked(&args.vault)?;
    if locked.config().backend == atrest_vault::Backend::Fscrypt {
        anyhow::bail!(
            "{} is an fscrypt vault: the kernel encrypts it, and format 2 is for FUSE vaults; there is nothing to migrate",
            args.vault.display()
        );
    }
    let config = locked.config();
    if config.format == atrest_vault::VERSION_2
        && !config.migrating
        && !locked
            .root()
            .join(atrest_vault::migrate::MIGRATE_DIR)
            .exists()
    {
        // Nothing to do, and no secret needed to say so.
        print(
            &args,
            &MigrateReport {
                already_format_2: true,
                ..MigrateReport::default()
            },
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Taken before the unlock, so a passphrase is not asked for in vain.
    let holder = format!("{} (atrest migrate)", std::process::id());
    let lock = MountLock::acquire(locked.root(), &holder).with_context(|| {
        format!(
            "atrest migrate rewrites every file of the vault, so it needs {} unmounted",
            args.vault.display()
        )
    })?;
    let mut vault = locked.unlock(&secrets::unlocker(&args.unlock)?)?;
    let options = MigrateOptions {
        drop_corrupt: args.drop_corrupt,
        batch_objects: args.batch_objects.max(1),
        ..MigrateOptions::default()
    };
    let progress = Arc::new(MigrateProgress::default());
    let shown = Arc::clone(&progress);
    let bar = super::progress::start_with("migrating", false, move || super::progress::Counts {
        files: shown.total_objects.load(Ordering::Relaxed),
        bytes: shown.total_bytes.load(Ordering::Relaxed),
        known: shown.counted.load(Ordering::Relaxed),
        files_done: shown.objects.load(Ordering::Relaxed),
        bytes_done: shown.bytes.load(Ordering::Relaxed),
    });
    let result = atrest_vault::migrate::migrate(&mut vault, &lock, &options, &progress);
    drop(bar);
    match result {
        Ok(report) => {
            if let Some(generation) = report.finished.clone() {
                super::generation::report_last(&vault, generation, ReportReason::Migrate);
            }
            print(&args, &report);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ MigrateError::Corrupt { .. }) => {
            eprintln!("atrest: error: {e}");
            Ok(ExitCode::from(EXIT_CORRUPT))
        }
        Err(e) => Err(e.into()),
    }
}

fn print(args: &MigrateArgs, report: &MigrateReport) {
    let vault = args.vault.display();
    if report.already_format_2 {
        println!("{vault} is a format 2 vault already: nothing to migrate");
        return;
    }
    for d in &report.dropped {
        let plain = d
            .plain
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        println!("dropped: {}{plain}: {}", d.backing.display(), d.what);
    }
    for t in &report.torn {
        println!(
            "torn: {}: its last block was torn by a crash during a write; converted up to its last complete block",
            t.display()
        );
    }
    println!(
        "{vault}: {}migrated to format 2: {} directories, {} files ({} bytes), {} symlinks, {} special files{}",
        if report.resumed { "resumed and " } else { "" },
        report.directories,
        report.files,
        report.bytes,
        report.symlinks,
        report.special,
        if report.dropped.is_empty() {
            String::new()
        } else {
            format!(
                ", {} left out (each a MIGRATE record in its log)",
                report.dropped.len()
            )
        }
    );
}
