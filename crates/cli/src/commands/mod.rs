mod backup;
mod demo;
mod demo_authority;
mod demo_data;
mod fsck;
mod fscrypt;
mod generate;
mod generation;
mod init;
pub(crate) mod keyd;
mod keyslot;
mod luks;
mod migrate;
mod mount;
mod passwd;
mod progress;
mod remote;
pub(crate) mod scope;
mod status;
mod unmount;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use atrest_core::Argon2Params;
use atrest_vault::{LockedVault, Unlocker, Vault};

use crate::cli::{Cli, Command, KdfArgs};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Mount(args) => mount::run(args),
        Command::Unmount(args) => unmount::run(args),
        Command::Unlock(args) => remote::unlock(args),
        Command::Lock(args) => match luks::mapping_name(&args.vault) {
            Some(name) => luks::close(&name),
            None => fscrypt::lock(args),
        },
        Command::Status(args) => status::run(args),
        Command::Keyslot(cmd) => keyslot::run(cmd),
        Command::Passwd(args) => passwd::run(args),
        Command::Fsck(args) => fsck::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Demo => demo::run(),
        Command::Keyd(cmd) => keyd::run(cmd),
        Command::Scope(cmd) => scope::run_scope(cmd),
        Command::App(cmd) => scope::run_app(cmd),
        Command::Enroll(args) => remote::enroll(args),
        Command::Reboot(args) => remote::reboot(args),
        Command::Alarm(cmd) => remote::alarm(cmd),
        Command::Doctor(args) => crate::doctor::run(args),
        Command::Backup(cmd) => backup::run(cmd),
        Command::Luks(cmd) => luks::run(cmd),
        Command::GenerateFiles { dir } => generate::run(&dir),
    }
}

pub(crate) fn argon2_params(kdf: &KdfArgs) -> anyhow::Result<Argon2Params> {
    let params = Argon2Params {
        memory_kib: kdf.argon2_memory.saturating_mul(1024),
        iterations: kdf.argon2_iterations,
        parallelism: 1,
    };
    params
        .validate()
        .context("--argon2-memory (MiB) and --argon2-iterations")?;
    Ok(params)
}

/// Opens the vault named by `vault` (its directory; for an fscrypt vault
/// the config is found beside it).
pub(crate) fn unlock(vault: &Path, unlocker: &Unlocker) -> anyhow::Result<Vault> {
    let location = atrest_vault::locate(vault)?;
    let locked = LockedVault::open(&location.config_dir)?;
    Ok(locked.unlock(unlocker)?)
}

pub(crate) fn open_locked(vault: &Path) -> anyhow::Result<(atrest_vault::Location, LockedVault)> {
    let location = atrest_vault::locate(vault)?;
    let locked = LockedVault::open(&location.config_dir)?;
    anyhow::ensure!(
        locked.config().backend == location.backend,
        "{}: the config says backend {} but it was found where a {} vault keeps it; the config was moved or tampered with",
        vault.display(),
        locked.config().backend.name(),
        location.backend.name()
    );
    Ok((location, locked))
}
