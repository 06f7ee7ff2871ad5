//! Reading secrets from files and the terminal. Nothing read here is ever
//! printed or logged.

use std::fs;
use std::io::IsTerminal;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use atrest_core::{SecretBytes, SecretKey};
use atrest_vault::{RecoveryKey, Unlocker};
use zeroize::Zeroizing;

use crate::cli::UnlockArgs;

pub fn read_passphrase_file(path: &Path) -> anyhow::Result<SecretBytes> {
    let mut data = Zeroizing::new(
        fs::read(path)
            .with_context(|| format!("cannot read the passphrase file {}", path.display()))?,
    );
    if data.last() == Some(&b'\n') {
        data.pop();
        if data.last() == Some(&b'\r') {
            data.pop();
        }
    }
    if data.is_empty() {
        bail!("the passphrase file {} is empty", path.display());
    }
    Ok(SecretBytes::new(data.to_vec()))
}

fn ask(prompt: &str) -> anyhow::Result<SecretBytes> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for a passphrase; give --passphrase-file (or --key-file, --recovery-key-file)"
        );
    }
    let pw = rpassword::prompt_password(prompt).context("cannot read the passphrase")?;
    if pw.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(SecretBytes::from(pw))
}

/// A new passphrase: from a file, or asked twice on the terminal.
pub fn new_passphrase(file: Option<&Path>) -> anyhow::Result<SecretBytes> {
    if let Some(path) = file {
        return read_passphrase_file(path);
    }
    let first = ask("New passphrase: ")?;
    let second = ask("Repeat passphrase: ")?;
    if !atrest_core::constant_time_eq(first.expose(), second.expose()) {
        bail!("the passphrases do not match; nothing was changed");
    }
    Ok(first)
}

pub fn read_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    let data = Zeroizing::new(
        fs::read(path).with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    SecretKey::from_slice(&data).with_context(|| {
        format!(
            "the key file {} must hold exactly 32 bytes; it holds {}",
            path.display(),
            data.len()
        )
    })
}

/// Reads a key file, or creates one (mode 0400) holding a new random key.
pub fn read_or_create_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    if path.exists() {
        return read_key_file(path);
    }
    let key = SecretKey::random();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    std::io::Write::write_all(&mut f, key.expose())?;
    f.sync_all()?;
    eprintln!(
        "atrest: created key file {} (keep it off this disk)",
        path.display()
    );
    Ok(key)
}

pub fn unlocker(args: &UnlockArgs) -> anyhow::Result<Unlocker> {
    if let Some(path) = &args.passphrase_file {
        return Ok(Unlocker::Passphrase(read_passphrase_file(path)?));
    }
    if let Some(path) = &args.key_file {
        return Ok(Unlocker::KeyFile(read_key_file(path)?));
    }
    if let Some(path) = &args.recovery_key_file {
        let text =
            Zeroizing::new(fs::read_to_string(path).with_context(|| {
                format!("cannot read the recovery key file {}", path.display())
            })?);
        let key = RecoveryKey::parse(&text).with_context(|| format!("{}", path.display()))?;
        return Ok(Unlocker::RecoveryKey(key.secret().clone()));
    }
    Ok(Unlocker::Passphrase(ask("Passphrase: ")?))
}

/// Shows a new recovery key once: on the terminal, or into a new file.
/// `opens` says what it opens without the other secrets ("the vault").
/// The secret of a new keyslot (`keyslot add`, `backup keyslot add`), and
/// the recovery key to show once the slot is written.
pub fn new_slot_secret(
    new: &crate::cli::NewSlotArgs,
) -> anyhow::Result<(Unlocker, Option<RecoveryKey>)> {
    use crate::cli::SlotKindArg;
    Ok(match new.kind {
        SlotKindArg::Passphrase => (
            Unlocker::Passphrase(new_passphrase(new.new_passphrase_file.as_deref())?),
            None,
        ),
        SlotKindArg::KeyFile => {
            let Some(path) = &new.new_key_file else {
                bail!("--kind key-file needs --new-key-file FILE (created if missing)");
            };
            (Unlocker::KeyFile(read_or_create_key_file(path)?), None)
        }
        SlotKindArg::RecoveryKey => {
            let key = RecoveryKey::generate();
            (Unlocker::RecoveryKey(key.secret().clone()), Some(key))
        }
    })
}

pub fn show_recovery_key(key: &RecoveryKey, out: Option<&Path>, opens: &str) -> anyhow::Result<()> {
    let text = Zeroizing::new(key.display());
    match out {
        Some(path) => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::io::Write::write_all(&mut f, format!("{}\n", text.as_str()).as_bytes())?;
            f.sync_all()?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o400))?;
            eprintln!(
                "atrest: recovery key written to {}; store it offline, then delete it here",
                path.display()
            );
        }
        None => {
            println!(
                "Recovery key (shown once; store it offline, it opens {opens} without the other secrets):"
            );
            println!();
            println!("    {}", text.as_str());
            println!();
        }
    }
    Ok(())
}
