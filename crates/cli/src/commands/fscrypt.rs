//! The fscrypt backend: the kernel encrypts the directory in place with a
//! v2 policy whose key derives from the vault master key; atrest keeps the
//! keyslots beside it and adds or removes the key.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use atrest_fscrypt::{KeyStatus, Mode, Policy};
use atrest_vault::{Backend, Vault};
use serde::Serialize;

use crate::cli::{FscryptModeArg, LockArgs, UnlockCmdArgs};
use crate::{hygiene, secrets};

/// A directory outside the encrypted one on the same file system: key
/// removal through a descriptor inside it would count as "in use".
fn outside(data: &Path) -> PathBuf {
    data.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Called by `atrest init --backend fscrypt` once the vault config exists:
/// add the key, set the policy, and prove the kernel can use it. On any
/// failure the caller removes the config again.
pub fn setup(vault: &Vault, data: &Path, mode: FscryptModeArg) -> anyhow::Result<()> {
    let key = vault.fscrypt_key();
    let identifier = atrest_fscrypt::add_key(&outside(data), &key)?;
    let policy = match mode {
        FscryptModeArg::Aes => Policy::new(identifier),
        FscryptModeArg::Adiantum => Policy::adiantum(identifier),
    };
    let result = atrest_fscrypt::set_policy(data, &policy)
        .map_err(anyhow::Error::from)
        .and_then(|()| probe(data));
    if result.is_err() {
        let _ = atrest_fscrypt::remove_key(&outside(data), identifier, false);
        // A policy cannot be taken off a directory; an empty one can be
        // made again, so a retry starts from a plain directory.
        if let Ok(meta) = fs::metadata(data)
            && fs::remove_dir(data).is_ok()
        {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt};
            let _ = fs::DirBuilder::new()
                .mode(meta.mode() & 0o7777)
                .create(data);
            let _ = std::os::unix::fs::chown(data, Some(meta.uid()), Some(meta.gid()));
        }
    }
    result
}

/// Creates and removes a file: the kernel only finds out that it lacks the
/// chosen cipher (Adiantum is often not built) when it first needs it.
fn probe(data: &Path) -> anyhow::Result<()> {
    let probe = data.join(".atrest-probe");
    match fs::write(&probe, b"probe") {
        Ok(()) => {
            fs::remove_file(&probe)?;
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(65) => bail!(
            "the kernel lacks the crypto driver for the chosen fscrypt mode (ENOPKG); \
             choose another --fscrypt-mode or load the module (see dmesg)"
        ),
        Err(e) => Err(e).context("writing a test file into the new fscrypt directory"),
    }
}

fn fscrypt_vault(path: &Path) -> anyhow::Result<(atrest_vault::Location, Policy)> {
    let (location, locked) = super::open_locked(path)?;
    if locked.config().backend != Backend::Fscrypt {
        bail!(
            "{} is a FUSE vault: open it with `atrest mount {} MOUNTPOINT`",
            path.display(),
            path.display()
        );
    }
    let policy = atrest_fscrypt::get_policy(&location.data)?.with_context(|| {
        format!(
            "{} has no fscrypt policy although its config says it should: it was replaced or the file system was restored without encryption",
            location.data.display()
        )
    })?;
    Ok((location, policy))
}

pub fn unlock(args: UnlockCmdArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let (location, policy) = fscrypt_vault(&args.vault)?;
    if let KeyStatus::Present {
        added_by_self: true,
        ..
    } = atrest_fscrypt::key_status(&outside(&location.data), policy.identifier)?
    {
        eprintln!("atrest: {} is already unlocked", location.data.display());
        return Ok(ExitCode::SUCCESS);
    }
    let vault = super::unlock(&args.vault, &secrets::unlocker(&args.unlock)?)?;
    give_key(&vault, &location, &policy)
}

/// Whether the kernel already holds this fscrypt vault's key (added by us).
pub fn is_unlocked(path: &Path) -> anyhow::Result<bool> {
    let (location, policy) = fscrypt_vault(path)?;
    Ok(matches!(
        atrest_fscrypt::key_status(&outside(&location.data), policy.identifier)?,
        KeyStatus::Present {
            added_by_self: true,
            ..
        }
    ))
}

/// Gives the kernel the key of `vault`, an unlocked fscrypt vault at `path`.
pub fn unlock_with(vault: &Vault, path: &Path) -> anyhow::Result<ExitCode> {
    let (location, policy) = fscrypt_vault(path)?;
    give_key(vault, &location, &policy)
}

fn give_key(
    vault: &Vault,
    location: &atrest_vault::Location,
    policy: &Policy,
) -> anyhow::Result<ExitCode> {
    let key = vault.fscrypt_key();
    let identifier = atrest_fscrypt::add_key(&outside(&location.data), &key)?;
    if identifier != policy.identifier {
        let _ = atrest_fscrypt::remove_key(&outside(&location.data), identifier, false);
        bail!(
            "the vault's key does not match the key {} protecting {} (the config belongs to another directory?)",
            policy.identifier,
            location.data.display()
        );
    }
    eprintln!("atrest: unlocked {}", location.data.display());
    Ok(ExitCode::SUCCESS)
}

pub fn lock(args: LockArgs) -> anyhow::Result<ExitCode> {
    let (location, policy) = fscrypt_vault(&args.vault)?;
    let status =
        atrest_fscrypt::remove_key(&outside(&location.data), policy.identifier, args.all_users)
            .map_err(|e| match e {
                atrest_fscrypt::Error::KeyNotFound { .. } => {
                    anyhow::anyhow!("{} is already locked", location.data.display())
                }
                other => other.into(),
            })?;
    if status.files_busy {
        let users = users_of(&location.data);
        let mut message = format!(
            "{} is only partly locked: files in it are still open, and stay readable until closed",
            location.data.display()
        );
        for user in &users {
            message.push_str(&format!("\n  in use by {user}"));
        }
        message.push_str("\nstop those processes (or the services using the directory), then run `atrest lock` again");
        bail!(message);
    }
    if status.other_users {
        bail!(
            "removed your claim on the key, but other users added it too; the directory stays unlocked until they lock it (or use --all-users as root)"
        );
    }
    eprintln!("atrest: locked {}", location.data.display());
    Ok(ExitCode::SUCCESS)
}

/// Processes with a file, or their working directory, under `dir`.
fn users_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
            || pid.to_string_lossy() == std::process::id().to_string()
        {
            continue;
        }
        let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let mut paths: Vec<PathBuf> = fs::read_link(p.path().join("cwd")).into_iter().collect();
        if let Ok(fds) = fs::read_dir(p.path().join("fd")) {
            paths.extend(fds.flatten().filter_map(|fd| fs::read_link(fd.path()).ok()));
        }
        for path in paths.into_iter().filter(|path| path.starts_with(dir)) {
            out.push(format!(
                "process {} ({}): {}",
                pid.to_string_lossy(),
                comm.trim(),
                path.display()
            ));
        }
    }
    out
}

#[derive(Serialize)]
pub struct FscryptStatus {
    policy_version: u8,
    contents: String,
    filenames: String,
    flags: u8,
    key_identifier: String,
    key: String,
    driver: Option<String>,
    warning: Option<String>,
}

impl FscryptStatus {
    pub fn print(&self) {
        println!(
            "policy:     fscrypt v{}, contents {}, names {}, flags {:#04x}",
            self.policy_version, self.contents, self.filenames, self.flags
        );
        println!("key:        {} ({})", self.key, self.key_identifier);
        if let Some(d) = &self.driver {
            println!("driver:     {d}");
        }
        if let Some(w) = &self.warning {
            println!("warning:    {w}");
        }
    }
}

pub fn status(data: &Path) -> FscryptStatus {
    let policy = match atrest_fscrypt::get_policy(data) {
        Ok(Some(p)) => p,
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                _ => "the directory has no fscrypt policy".into(),
            };
            return FscryptStatus {
                policy_version: 0,
                contents: "-".into(),
                filenames: "-".into(),
                flags: 0,
                key_identifier: "-".into(),
                key: "unknown".into(),
                driver: None,
                warning: Some(why),
            };
        }
    };
    let key = match atrest_fscrypt::key_status(&outside(data), policy.identifier) {
        Ok(KeyStatus::Present { .. }) => "unlocked".to_string(),
        Ok(KeyStatus::Absent) => "locked".to_string(),
        Ok(KeyStatus::IncompletelyRemoved) => "locking (files still open)".to_string(),
        Err(e) => format!("unknown: {e}"),
    };
    let driver = atrest_fscrypt::driver_for(policy.contents);
    let warning = match &driver {
        Some(d) if !d.accelerated => Some(format!(
            "the kernel's {} driver is {} (generic, no AES instructions): expect about 80-95 MiB/s writes and 35 MiB/s reads; \
             a kernel with the aesni/VAES drivers (CONFIG_CRYPTO_AES_NI_INTEL) or --fscrypt-mode adiantum is much faster",
            d.algorithm, d.driver
        )),
        None if policy.contents == Mode::Adiantum => {
            Some("the kernel has no Adiantum driver loaded; files may fail with ENOPKG".into())
        }
        _ => None,
    };
    FscryptStatus {
        policy_version: Policy::VERSION,
        contents: policy.contents.to_string(),
        filenames: policy.filenames.to_string(),
        flags: policy.flags(),
        key_identifier: policy.identifier.to_string(),
        key,
        driver: driver.map(|d| format!("{} = {} (priority {})", d.algorithm, d.driver, d.priority)),
        warning,
    }
}
