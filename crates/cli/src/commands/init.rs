use std::process::ExitCode;

use atrest_core::ContentAlgorithm;
use atrest_vault::{CreateOptions, Unlocker, Vault};

use anyhow::Context;
use atrest_vault::Backend;

use crate::cli::{BackendArg, Cipher, InitArgs};
use crate::{hygiene, secrets};

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let first = match &args.key_file {
        Some(path) => Unlocker::KeyFile(secrets::read_or_create_key_file(path)?),
        None => Unlocker::Passphrase(secrets::new_passphrase(args.passphrase_file.as_deref())?),
    };
    let (config_dir, data) = match args.backend {
        BackendArg::Fuse => (args.vault.clone(), None),
        BackendArg::Fscrypt => {
            let data = std::path::absolute(&args.vault)?;
            match std::fs::read_dir(&data) {
                Ok(mut entries) => anyhow::ensure!(
                    entries.next().is_none(),
                    "{} is not empty: fscrypt can only encrypt an empty directory (move the files out, init, move them back in)",
                    data.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&data)
                    .with_context(|| format!("creating {}", data.display()))?,
                Err(e) => return Err(e).with_context(|| data.display().to_string()),
            }
            (atrest_vault::fscrypt_config_dir(&data)?, Some(data))
        }
    };
    let options = CreateOptions {
        backend: match args.backend {
            BackendArg::Fuse => Backend::Fuse,
            BackendArg::Fscrypt => Backend::Fscrypt,
        },
        algorithm: match args.cipher {
            Cipher::Aes256Gcm => ContentAlgorithm::Aes256Gcm,
            Cipher::XChaCha20Poly1305 => ContentAlgorithm::XChaCha20Poly1305,
        },
        argon2: super::argon2_params(&args.kdf)?,
        recovery_key: !args.no_recovery_key,
        format: args.format,
    };
    let label = if args.key_file.is_some() {
        "key file"
    } else {
        "passphrase"
    };
    let (vault, recovery) = Vault::create(&config_dir, options, &first, label)?;
    if let Some(data) = &data
        && let Err(e) = super::fscrypt::setup(&vault, data, args.fscrypt_mode)
    {
        // Leave nothing half made: no keyslots for a directory that is not encrypted.
        let _ = std::fs::remove_dir_all(&config_dir);
        return Err(e.context(format!("making {} an fscrypt vault", data.display())));
    }
    let cipher = match args.backend {
        BackendArg::Fuse => vault.config().algorithm.name(),
        BackendArg::Fscrypt => "kernel fscrypt v2",
    };
    let format = if vault.config().format == atrest_vault::VERSION_2 {
        ", format 2 (experimental: local witness only)"
    } else {
        ""
    };
    eprintln!(
        "atrest: created vault {} ({cipher}, {} keyslots{format})",
        args.vault.display(),
        vault.config().keyslots.len()
    );
    if let Some(key) = recovery {
        secrets::show_recovery_key(&key, args.recovery_key_out.as_deref(), "the vault")?;
    }
    Ok(ExitCode::SUCCESS)
}
