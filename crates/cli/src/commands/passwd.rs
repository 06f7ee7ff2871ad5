use std::process::ExitCode;

use anyhow::Context;
use atrest_vault::Unlocker;

use crate::cli::{PasswdArgs, UnlockArgs};
use crate::{hygiene, secrets};

pub fn run(args: PasswdArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let params = super::argon2_params(&args.kdf)?;
    let old = secrets::unlocker(&UnlockArgs {
        passphrase_file: args.passphrase_file.clone(),
        ..Default::default()
    })?;
    let mut vault = super::unlock(&args.vault, &old)?;
    let slot = vault
        .slot_for(&old)
        .context("no passphrase slot takes that passphrase")?;
    let new = Unlocker::Passphrase(secrets::new_passphrase(
        args.new_passphrase_file.as_deref(),
    )?);
    vault.replace_slot(slot, &new, params)?;
    eprintln!("atrest: passphrase of keyslot {slot} changed");
    Ok(ExitCode::SUCCESS)
}
