//! `atrest luks bind|open|close|list|unbind|erase`. The work is in
//! `atrest-luks`; this file turns flags into its calls and its results
//! into lines and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use atrest_agent::{AgentError, StateDir};
use atrest_luks::{Authorities, Device, LuksError};
use serde_json::json;

use super::remote::{authority_specs, options, runtime};
use crate::cli::{
    LuksBindArgs, LuksCommand, LuksEraseArgs, LuksListArgs, LuksOpenArgs, LuksScratchArgs,
};
use crate::hygiene;

pub fn run(command: LuksCommand) -> anyhow::Result<ExitCode> {
    match command {
        LuksCommand::Bind(args) => bind(args),
        LuksCommand::Open(args) => open(args),
        LuksCommand::Close { name } => close(&name),
        LuksCommand::Scratch(args) => scratch(args),
        LuksCommand::List(args) => list(args),
        LuksCommand::Unbind(args) => {
            let device = Device::new(&args.device);
            for (token, keyslot) in atrest_luks::unbind(&device, args.token_id)? {
                match keyslot {
                    None => eprintln!("atrest: removed atrest token {token}"),
                    Some(slot) => eprintln!(
                        "atrest: destroyed keyslot {slot} and removed atrest token {token}"
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LuksCommand::Erase(args) => erase(args),
    }
}

/// `atrest lock /dev/mapper/NAME` closes a LUKS mapping, as `atrest luks
/// close NAME` does: the name, when the path is a device-mapper mapping.
pub(super) fn mapping_name(path: &Path) -> Option<String> {
    let name = path.strip_prefix("/dev/mapper").ok()?.to_str()?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

pub(super) fn close(name: &str) -> anyhow::Result<ExitCode> {
    let name = name.strip_prefix("/dev/mapper/").unwrap_or(name);
    atrest_luks::cryptsetup::close(name)?;
    eprintln!("atrest: closed /dev/mapper/{name}");
    Ok(ExitCode::SUCCESS)
}

fn bind(args: LuksBindArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let threshold = args.authority.threshold;
    let (specs, host_name) = authority_specs(&args.authority)?;
    let device = Device::new(&args.device);
    let state = StateDir::from_env();
    let bound = runtime()?.block_on(atrest_luks::bind(
        &device,
        &args.existing_key_file,
        &state,
        &specs,
        threshold,
        &host_name,
    ))?;
    for (url, host, group) in &bound.enrolled {
        eprintln!("atrest: enrolled at {url} as {host} (group {group:?})");
    }
    eprintln!(
        "atrest: added keyslot {} to {}, bound through atrest token {}",
        bound.keyslot,
        args.device.display(),
        bound.token_id
    );
    eprintln!(
        "atrest: host identity in {} (keep it, and its directory, root-only)",
        state.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn open(args: LuksOpenArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let device = Device::new(&args.device);
    let state = StateDir::from_env();
    let result = runtime()?.block_on(atrest_luks::unlock(
        &device,
        &state,
        &options(&args.retry),
        args.name.as_deref(),
    ));
    let opened = match result {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("atrest: error: {e}");
            return Ok(ExitCode::from(exit_code(&e)));
        }
    };
    match &opened.mapped {
        Some(mapped) => eprintln!(
            "atrest: opened {} as {mapped} (keyslot {}, key from {})",
            args.device.display(),
            opened.keyslot,
            opened.url
        ),
        None => eprintln!(
            "atrest: the key from {} opens keyslot {} of {} (checked only; nothing mapped)",
            opened.url,
            opened.keyslot,
            args.device.display()
        ),
    }
    if opened.rotated {
        eprintln!(
            "atrest: warning: the authority rotated this host's secret; run `atrest luks bind` \
             again and unbind token {} to follow it",
            opened.token_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `atrest luks scratch`: idempotent at every boot.
fn scratch(args: LuksScratchArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let device = Device::new(&args.device);
    let state = StateDir::from_env();
    let mapped = PathBuf::from(format!("/dev/mapper/{}", args.name));
    if is_mounted_at(&mapped, &args.mount)? {
        eprintln!(
            "atrest: {} is already open and mounted at {}",
            args.device.display(),
            args.mount.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let bound = match atrest_luks::bindings(&device) {
        Ok((_, bindings)) => !bindings.is_empty(),
        Err(LuksError::NotLuks(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let runtime = runtime()?;
    let fresh = if bound {
        eprintln!(
            "atrest: {} is bound to a key authority: unlocking",
            args.device.display()
        );
        let result = runtime.block_on(atrest_luks::unlock(
            &device,
            &state,
            &options(&args.retry),
            Some(&args.name),
        ));
        if let Err(e) = result {
            eprintln!("atrest: error: {e}");
            return Ok(ExitCode::from(exit_code(&e)));
        }
        false
    } else {
        let threshold = args.authority.threshold;
        let (specs, host_name) = authority_specs(&args.authority)?;
        let urls = specs
            .iter()
            .map(|s| s.url.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let done = runtime.block_on(atrest_luks::format_bound(
            &device,
            &state,
            &specs,
            threshold,
            &host_name,
            Some(&args.name),
        ));
        match done {
            Ok(bound) => eprintln!(
                "atrest: formatted {} as LUKS2 bound to {urls} (keyslot {}, atrest token {})",
                args.device.display(),
                bound.keyslot,
                bound.token_id
            ),
            Err(e @ atrest_luks::LuksError::NoDeviceMapper) => {
                eprintln!(
                    "atrest: formatted {} as LUKS2 bound to {urls}",
                    args.device.display(),
                );
                eprintln!("atrest: error: {e}");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e.into()),
        }
        true
    };
    // A crash between format and mkfs leaves a mapping without a file
    // system: make one then too, never over one that exists.
    if fresh || Device::new(&mapped).signature()?.is_none() {
        let mkfs = format!("mkfs.{}", args.fs);
        let status = std::process::Command::new(&mkfs)
            .arg("-q")
            .arg(&mapped)
            .status()
            .with_context(|| format!("cannot run {mkfs}"))?;
        if !status.success() {
            bail!("{mkfs} {} failed ({status})", mapped.display());
        }
    }
    std::fs::create_dir_all(&args.mount)
        .with_context(|| format!("cannot create {}", args.mount.display()))?;
    let status = std::process::Command::new("mount")
        .arg(&mapped)
        .arg(&args.mount)
        .status()
        .context("cannot run mount")?;
    if !status.success() {
        bail!(
            "mount {} {} failed ({status})",
            mapped.display(),
            args.mount.display()
        );
    }
    eprintln!(
        "atrest: {} mounted at {}",
        mapped.display(),
        args.mount.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `source` is mounted at `target` (/proc/self/mounts).
fn is_mounted_at(source: &Path, target: &Path) -> anyhow::Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let (source, target) = (source.to_string_lossy(), target.to_string_lossy());
    Ok(mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.next() == Some(&*source) && fields.next() == Some(&*target)
    }))
}

/// Refusals for good and audit alarms get the exit codes `atrest unlock`
/// gives them, so one systemd unit setting covers vaults and volumes.
fn exit_code(error: &LuksError) -> u8 {
    match error {
        LuksError::Agent(
            AgentError::Denied { .. } | AgentError::Revoked { .. } | AgentError::Shredded { .. },
        ) => crate::EXIT_REFUSED,
        LuksError::Agent(AgentError::AuditAlarm { .. }) => crate::EXIT_AUDIT_ALARM,
        _ => 1,
    }
}

pub(super) fn list(args: LuksListArgs) -> anyhow::Result<ExitCode> {
    let device = Device::new(&args.device);
    let (header, bindings) = atrest_luks::bindings(&device)?;
    let mut bound = Vec::new();
    let mut broken = Vec::new();
    for binding in &bindings {
        match binding {
            Ok(b) => bound.push(b),
            Err(e) => broken.push(e.to_string()),
        }
    }
    let bound_slots: Vec<u32> = bound.iter().map(|b| b.keyslot).collect();
    let others: Vec<u32> = header
        .keyslots
        .iter()
        .copied()
        .filter(|s| !bound_slots.contains(s))
        .collect();
    if args.json {
        let json = json!({
            "device": args.device,
            "uuid": header.uuid,
            "keyslots": header.keyslots,
            "bindings": bound.iter().map(|b| {
                let hosts = b.authorities.hosts();
                let mut j = json!({
                    "token": b.token_id,
                    "keyslot": b.keyslot,
                    "authority": hosts[0].0,
                    "host_id": hosts[0].1,
                });
                match &b.authorities {
                    Authorities::Remote(slot) => j["replicas"] = json!(slot.replicas),
                    Authorities::Threshold(slot) => {
                        j["threshold"] = json!(slot.threshold);
                        j["authorities"] = json!(hosts.iter().map(|(u, h)| json!({"url": u, "host_id": h})).collect::<Vec<_>>());
                    }
                }
                j
            }).collect::<Vec<_>>(),
            "other_keyslots": others,
            "unreadable_tokens": broken,
        });
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}  (LUKS2, UUID {})", args.device.display(), header.uuid);
    for b in &bound {
        let who = match &b.authorities {
            Authorities::Remote(slot) => {
                let replicas = if slot.replicas.is_empty() {
                    String::new()
                } else {
                    format!(" (replicas: {})", slot.replicas.join(", "))
                };
                format!(
                    "{} as {}{replicas}",
                    slot.authority.url,
                    slot.authority.host_id.as_str()
                )
            }
            Authorities::Threshold(slot) => format!(
                "{}-of-{}: {}",
                slot.threshold,
                slot.members.len(),
                b.authorities
                    .hosts()
                    .iter()
                    .map(|(u, h)| format!("{u} as {h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        println!(
            "  keyslot {:>2}  atrest token {}: {who}",
            b.keyslot, b.token_id
        );
    }
    for slot in &others {
        println!("  keyslot {slot:>2}  passphrase or key file (not bound to an authority)");
    }
    for e in &broken {
        println!("  {e}");
    }
    if bound.is_empty() {
        println!("  no atrest binding: `atrest luks bind` adds one");
    }
    Ok(ExitCode::SUCCESS)
}

fn erase(args: LuksEraseArgs) -> anyhow::Result<ExitCode> {
    let device = Device::new(&args.device);
    let header = device.header()?;
    if !args.yes {
        bail!(
            "erasing {} destroys all {} keyslots ({:?}): no passphrase, key file, recovery \
             copy of them or key authority can open it afterwards, and its data is lost for \
             good unless you hold a header backup (`cryptsetup luksHeaderBackup`). Run again \
             with --yes to erase",
            args.device.display(),
            header.keyslots.len(),
            header.keyslots
        );
    }
    device.erase()?;
    let after = device.header()?;
    if !after.keyslots.is_empty() {
        bail!(
            "{} still has keyslots {:?} after erase",
            args.device.display(),
            after.keyslots
        );
    }
    eprintln!(
        "atrest: erased every keyslot of {} ({} destroyed); its data cannot be decrypted any more",
        args.device.display(),
        header.keyslots.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_device_mapper_paths_name_a_mapping() {
        assert_eq!(
            mapping_name(Path::new("/dev/mapper/data")).as_deref(),
            Some("data")
        );
        assert_eq!(mapping_name(Path::new("/dev/mapper/")), None);
        assert_eq!(mapping_name(Path::new("/dev/mapper/a/b")), None);
        assert_eq!(mapping_name(Path::new("/srv/data")), None);
        assert_eq!(mapping_name(Path::new("/dev/mapperx/data")), None);
    }
}
