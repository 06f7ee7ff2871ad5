use std::process::ExitCode;

use atrest_vault::fsck::fsck;

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
        anyhow::bail!(
            "{}: format 2 vaults cannot be checked by this build yet (it is experimental)",
            args.vault.display()
        );
    }
    let config_problems = locked.config_problems();
    let vault = locked.unlock(&secrets::unlocker(&args.unlock)?)?;
    let report = fsck(&vault, config_problems);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            let plain = p
                .plain
                .as_ref()
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default();
            println!("corrupt: {}{}: {}", p.backing.display(), plain, p.what);
        }
        println!(
            "checked {} directories, {} files ({} bytes), {} symlinks: {}",
            report.directories,
            report.files,
            report.bytes,
            report.symlinks,
            if report.is_clean() {
                "no problems".to_string()
            } else {
                format!("{} problems", report.problems.len())
            }
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CORRUPT)
    })
}
