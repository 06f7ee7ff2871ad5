//! `atrest enroll`, `atrest unlock` (through a key authority, or with a
//! secret) and `atrest reboot --planned`. The work is in `atrest-agent`;
//! this file turns flags into its calls and its results into lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use atrest_agent::{AuthoritySpec, StateDir, UnlockOptions, parse_fingerprint};
use atrest_vault::{Backend, LockedVault, SlotKind, Vault};
use zeroize::Zeroizing;

use crate::cli::{
    AlarmCommand, AuthorityArgs, AuthorityRetryArgs, EnrollArgs, RebootArgs, UnlockArgs,
    UnlockCmdArgs,
};
use crate::{hygiene, secrets};

/// Vaults `atrest reboot --planned` announces when none are named.
const VAULTS_FILE: &str = "/etc/atrest/vaults";

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(super) fn options(retry: &AuthorityRetryArgs) -> UnlockOptions {
    UnlockOptions {
        retries: retry.retries,
        timeout: Duration::from_secs(retry.timeout),
        ..UnlockOptions::default()
    }
}

fn has_secret(args: &UnlockArgs) -> bool {
    args.passphrase_file.is_some() || args.recovery_key_file.is_some() || args.key_file.is_some()
}

fn has_remote_slot(locked: &LockedVault) -> bool {
    locked
        .config()
        .keyslots
        .iter()
        .any(|s| matches!(s.kind, SlotKind::Remote(_) | SlotKind::Threshold(_)))
}

fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; give one with --host-name")?
        .trim()
        .to_string();
    if name.is_empty() {
        bail!("this machine has no host name; give one with --host-name");
    }
    Ok(name)
}

/// The authorities a new keyslot or LUKS binding asks, checked as one set
/// (a fingerprint per authority, a token per authority or none, replicas
/// only for a single authority), and the host name to enroll under.
pub(super) fn authority_specs(
    args: &AuthorityArgs,
) -> anyhow::Result<(Vec<AuthoritySpec>, String)> {
    let n = args.authorities.len();
    if (!args.tokens.is_empty() && args.tokens.len() != n) || args.ca_fingerprints.len() != n {
        bail!(
            "give one --ca-fingerprint per --authority, and one --token per --authority or none \
             (none: this host is already enrolled there) ({n} authorities, {} tokens, {} fingerprints)",
            args.tokens.len(),
            args.ca_fingerprints.len()
        );
    }
    if !args.replicas.is_empty() && n != 1 {
        bail!(
            "--replica names another URL of a single authority (replicas on one database); \
             with {n} authorities (a k-of-n threshold) give no --replica"
        );
    }
    let mut specs = Vec::with_capacity(n);
    for (i, (url, fingerprint)) in args
        .authorities
        .iter()
        .zip(&args.ca_fingerprints)
        .enumerate()
    {
        specs.push(AuthoritySpec {
            url: url.clone(),
            token: args.tokens.get(i).map(|t| Zeroizing::new(t.clone())),
            ca_fingerprint: parse_fingerprint(fingerprint)?,
            replicas: if i == 0 {
                args.replicas.clone()
            } else {
                Vec::new()
            },
        });
    }
    let host_name = match &args.host_name {
        Some(name) => name.clone(),
        None => host_name()?,
    };
    Ok((specs, host_name))
}

pub fn enroll(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let (specs, host_name) = authority_specs(&args.authority)?;
    let n = specs.len();
    let mut vault = super::unlock(&args.vault, &secrets::unlocker(&args.unlock)?)?;
    let state = StateDir::from_env();
    let enrolled = runtime()?.block_on(atrest_agent::enroll(
        &mut vault,
        &state,
        &specs,
        args.authority.threshold,
        &host_name,
        &args.label,
    ))?;
    for (url, host, group) in &enrolled.authorities {
        eprintln!("atrest: enrolled at {url} as {host} (group {group:?})");
    }
    match enrolled.threshold {
        None => eprintln!(
            "atrest: added remote keyslot {} to {}",
            enrolled.slot_id,
            args.vault.display()
        ),
        Some(k) => eprintln!(
            "atrest: added {k}-of-{n} threshold keyslot {} to {}",
            enrolled.slot_id,
            args.vault.display()
        ),
    }
    eprintln!(
        "atrest: host identity in {} (keep it, and its directory, root-only)",
        state.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `atrest unlock VAULT [--mount DIR]`: with a passphrase, recovery key or
/// key file given (or no remote slot), as before; otherwise through the
/// vault's remote or threshold keyslot.
pub fn unlock(args: UnlockCmdArgs) -> anyhow::Result<ExitCode> {
    match unlock_vault(args) {
        Err(e) if is_final_refusal(&e) || super::mount::is_witness_refusal(&e) => {
            eprintln!("atrest: error: {e:#}");
            Ok(ExitCode::from(crate::EXIT_REFUSED))
        }
        Err(e) if is_audit_alarm(&e) => {
            eprintln!("atrest: error: {e:#}");
            Ok(ExitCode::from(crate::EXIT_AUDIT_ALARM))
        }
        other => other,
    }
}

fn is_audit_alarm(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<atrest_agent::AgentError>(),
        Some(atrest_agent::AgentError::AuditAlarm { .. })
    )
}

/// `atrest alarm list|acknowledge`.
pub fn alarm(command: AlarmCommand) -> anyhow::Result<ExitCode> {
    let state = StateDir::from_env();
    match command {
        AlarmCommand::List { json } => {
            let alarms = state.alarms()?;
            for kept in &alarms {
                let alarm = &kept.alarm;
                if json {
                    println!("{}", serde_json::to_string(alarm)?);
                    continue;
                }
                println!("audit key   {}", alarm.audit_key);
                println!("authority   {}", alarm.url);
                println!("detected    {}", super::keyd::rfc3339(alarm.detected_at));
                println!("reason      {}", alarm.reason);
                for (what, head) in [("kept head", &alarm.kept), ("given head", &alarm.given)] {
                    if let Some(h) = head {
                        println!("{what:<11} size {} root {}", h.tree_size, h.root_hash);
                    }
                }
                println!("evidence    {}", kept.path.display());
                println!();
            }
            if alarms.is_empty() {
                if !json {
                    eprintln!("atrest: no audit alarm raised");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json {
                eprintln!(
                    "atrest: {} alarm(s); after investigating, `atrest alarm acknowledge AUDIT_KEY`",
                    alarms.len()
                );
            }
            Ok(ExitCode::from(crate::EXIT_AUDIT_ALARM))
        }
        AlarmCommand::Acknowledge { audit_key } => {
            let kept = state.acknowledge_alarm(&audit_key)?;
            eprintln!(
                "atrest: alarm for {} ({}) acknowledged; evidence kept in {}. The next unlock \
                 trusts the log as the authority serves it now",
                kept.alarm.audit_key,
                kept.alarm.url,
                kept.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The authority said no for good (denied, revoked, shredded): retrying
/// cannot help, so the exit code says so (systemd: `RestartPreventExitStatus`).
fn is_final_refusal(error: &anyhow::Error) -> bool {
    use atrest_agent::AgentError;
    matches!(
        error.downcast_ref::<AgentError>(),
        Some(AgentError::Denied { .. } | AgentError::Revoked { .. } | AgentError::Shredded { .. })
    )
}

fn unlock_vault(args: UnlockCmdArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let (location, locked) = super::open_locked(&args.vault)?;
    let remote = !has_secret(&args.unlock) && has_remote_slot(&locked);
    match location.backend {
        Backend::Fscrypt => {
            if args.mount.is_some() {
                bail!(
                    "{} is an fscrypt vault: the kernel serves it in place, there is nothing to mount",
                    args.vault.display()
                );
            }
            if !remote {
                drop(locked);
                return super::fscrypt::unlock(args);
            }
            if super::fscrypt::is_unlocked(&args.vault)? {
                eprintln!("atrest: {} is already unlocked", location.data.display());
                return Ok(ExitCode::SUCCESS);
            }
            let vault = unlock_remote(locked, &args.retry)?;
            super::fscrypt::unlock_with(&vault, &args.vault)
        }
        Backend::Fuse => {
            let Some(mountpoint) = &args.mount else {
                bail!(
                    "{} is a FUSE vault: give a mount point (`atrest unlock {} --mount DIR`), or use `atrest mount`",
                    args.vault.display(),
                    args.vault.display()
                );
            };
            let (vault, witnessed) = if remote {
                unlock_remote_witnessed(locked, &args.retry)?
            } else {
                (
                    locked.unlock(&secrets::unlocker(&args.unlock)?)?,
                    Vec::new(),
                )
            };
            super::mount::mount_unlocked(&vault, mountpoint, &args.options, &witnessed)
        }
    }
}

/// Unlocks a vault for a command that needs its keys but no mount
/// (`atrest backup`): with a secret when one is given, else through its
/// key authority when it has a remote keyslot.
pub(crate) fn unlock_keys(
    vault: &Path,
    unlock: &UnlockArgs,
    retry: &AuthorityRetryArgs,
) -> anyhow::Result<Vault> {
    let (_, locked) = super::open_locked(vault)?;
    if !has_secret(unlock) && has_remote_slot(&locked) {
        return unlock_remote(locked, retry);
    }
    if !has_secret(unlock) {
        bail!(
            "{} has no remote keyslot: give --passphrase-file, --recovery-key-file or --key-file",
            vault.display()
        );
    }
    Ok(locked.unlock(&secrets::unlocker(unlock)?)?)
}

fn unlock_remote(locked: LockedVault, retry: &AuthorityRetryArgs) -> anyhow::Result<Vault> {
    unlock_remote_witnessed(locked, retry).map(|(vault, _)| vault)
}

/// [`unlock_remote`], with what each answering authority had witnessed of
/// a format 2 vault (for the mount's check, docs/format.md §16.17.4).
fn unlock_remote_witnessed(
    locked: LockedVault,
    retry: &AuthorityRetryArgs,
) -> anyhow::Result<(Vault, Vec<atrest_vault::AuthorityWitness>)> {
    let state = StateDir::from_env();
    let unlocked = runtime()?.block_on(atrest_agent::unlock(locked, &state, &options(retry)))?;
    for url in &unlocked.rebound {
        eprintln!(
            "atrest: re-bound keyslot {} to {url}'s new key",
            unlocked.slot_id
        );
    }
    for warning in &unlocked.warnings {
        eprintln!("atrest: warning: {warning}");
    }
    Ok((unlocked.vault, unlocked.witnessed))
}

fn listed_vaults() -> anyhow::Result<Vec<PathBuf>> {
    let text = match std::fs::read_to_string(VAULTS_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "name the vaults to announce (`atrest reboot --planned VAULT...`), or list them in {VAULTS_FILE}"
        ),
        Err(e) => return Err(e).context(VAULTS_FILE),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect())
}

pub fn reboot(args: RebootArgs) -> anyhow::Result<ExitCode> {
    let vaults = if args.vaults.is_empty() {
        listed_vaults()?
    } else {
        args.vaults.clone()
    };
    let state = StateDir::from_env();
    let rt = runtime()?;
    let mut failed = 0;
    for vault in &vaults {
        if let Err(e) = announce(&rt, vault, &state, &args.retry) {
            eprintln!("atrest: error: {}: {e:#}", vault.display());
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} vault(s) not announced", vaults.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn announce(
    rt: &tokio::runtime::Runtime,
    vault: &Path,
    state: &StateDir,
    retry: &AuthorityRetryArgs,
) -> anyhow::Result<()> {
    let (_, locked) = super::open_locked(vault)?;
    let results = rt.block_on(atrest_agent::announce_reboot(
        locked.config(),
        state,
        &options(retry),
    ))?;
    let mut errors = Vec::new();
    for r in results {
        match r.result {
            Ok(reply) => eprintln!(
                "atrest: {}: reboot announced to {} (valid until {}, audit entry {})",
                vault.display(),
                r.url,
                reply.valid_until,
                reply.audit_seq
            ),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}
