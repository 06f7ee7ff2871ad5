use std::process::ExitCode;

use atrest_core::ContentAlgorithm;
use atrest_vault::{CreateOptions, Unlocker, Vault};

use crate::cli::{Cipher, InitArgs};
use crate::{hygiene, secrets};

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let first = match &args.key_file {
        Some(path) => Unlocker::KeyFile(secrets::read_or_create_key_file(path)?),
        None => Unlocker::Passphrase(secrets::new_passphrase(args.passphrase_file.as_deref())?),
    };
    let options = CreateOptions {
        algorithm: match args.cipher {
            Cipher::Aes256Gcm => ContentAlgorithm::Aes256Gcm,
            Cipher::XChaCha20Poly1305 => ContentAlgorithm::XChaCha20Poly1305,
        },
        argon2: super::argon2_params(&args.kdf)?,
        recovery_key: !args.no_recovery_key,
    };
    let label = if args.key_file.is_some() {
        "key file"
    } else {
        "passphrase"
    };
    let (vault, recovery) = Vault::create(&args.vault, options, &first, label)?;
    eprintln!(
        "atrest: created vault {} ({}, {} keyslots)",
        args.vault.display(),
        vault.config().algorithm.name(),
        vault.config().keyslots.len()
    );
    if let Some(key) = recovery {
        secrets::show_recovery_key(&key, args.recovery_key_out.as_deref())?;
    }
    Ok(ExitCode::SUCCESS)
}
