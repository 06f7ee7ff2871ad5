//! `atrest backup`: encrypted, deduplicated backups. A repository's key is
//! random and held in keyslots of its own (docs/format.md §18.6): a
//! passphrase, a key file, a recovery key, or a vault, whose slot opens
//! with the vault's backup key (`HKDF(VMK, vault id, "atrest v1 backup
//! key")`), so every way of unlocking the vault (its keyslots, its key
//! authority) opens the repository too. `shred` destroys every keyslot.
//! Format 1 repositories (the vault's backup key is the repository key)
//! still open with `--vault`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use atrest_agent::StateDir;
use atrest_backup::{
    Backend, ChunkSizes, LocalBackend, LockedRepository, Parent, Patterns, Progress, Repository,
    S3Backend, S3Options, Snapshot, SnapshotMeta,
};
use atrest_vault::{Keyslot, RecoveryKey, SlotKind, Unlocker};

use crate::cli::{
    BackupCheckArgs, BackupCommand, BackupDiffArgs, BackupEnrollArgs, BackupForgetArgs,
    BackupInitArgs, BackupKeyArgs, BackupKeyslotCommand, BackupListArgs, BackupLsArgs,
    BackupMountArgs, BackupRepoArgs, BackupRestoreArgs, BackupRunArgs, BackupShredArgs,
    BackupUnlockArgs,
};
use crate::{hygiene, secrets};

/// Exit code of `run` and `restore` when some entries were skipped.
const PARTIAL: u8 = 3;
/// Exit code of `check` when it found damage.
const DAMAGED: u8 = 4;

pub fn run(cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    // This process holds the vault's master key: no core dumps.
    hygiene::harden()?;
    match cmd {
        BackupCommand::Init(args) => init(&args),
        BackupCommand::Run(args) => backup(&args),
        BackupCommand::Snapshots(args) => snapshots(&args),
        BackupCommand::Restore(args) => restore(&args),
        BackupCommand::Check(args) => check(&args),
        BackupCommand::Status(args) => status(&args),
        BackupCommand::Forget(args) => forget(&args),
        BackupCommand::Ls(args) => ls(&args),
        BackupCommand::Diff(args) => diff(&args),
        BackupCommand::Prune(args) => {
            let mut repo = open_locked(&args.key, true)?;
            prune(&mut repo)
        }
        BackupCommand::Unlock(args) => unlock_repo(&args),
        BackupCommand::Mount(args) => mount(&args),
        BackupCommand::Keyslot(cmd) => keyslot(cmd),
        BackupCommand::Enroll(args) => enroll(&args),
        BackupCommand::Shred(args) => shred(&args),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Repo = Repository<Box<dyn Backend>>;
type Locked = LockedRepository<Box<dyn Backend>>;

fn is_s3(at: &BackupRepoArgs) -> bool {
    at.repo.to_str().is_some_and(|r| r.starts_with("s3://"))
}

fn backend(at: &BackupRepoArgs) -> anyhow::Result<Box<dyn Backend>> {
    if is_s3(at) {
        let url = at.repo.to_str().unwrap_or_default();
        let options = S3Options {
            endpoint: at.s3_endpoint.clone(),
            ..S3Options::default()
        };
        Ok(Box::new(S3Backend::new(url, &options)?))
    } else {
        Ok(Box::new(LocalBackend::new(&at.repo)))
    }
}

fn has_secret(args: &BackupKeyArgs) -> bool {
    let u = &args.unlock;
    args.vault.is_some()
        || u.passphrase_file.is_some()
        || u.key_file.is_some()
        || u.recovery_key_file.is_some()
}

/// The secret the options give: a vault's backup key (the vault unlocked
/// by its own secret or key authority), or a keyslot's secret. With none
/// given, a passphrase asked on a terminal when the repository has a
/// passphrase slot; else an error naming what opens this repository.
fn secret<B: Backend>(
    args: &BackupKeyArgs,
    locked: &LockedRepository<B>,
) -> anyhow::Result<Unlocker> {
    if let Some(vault) = &args.vault {
        let vault = super::remote::unlock_keys(vault, &args.unlock, &args.retry)?;
        return Ok(vault.backup_key());
    }
    let kinds: Vec<&SlotKind> = locked
        .keyslots()
        .iter()
        .filter_map(|s| s.slot.as_ref().ok().map(|s| &s.kind))
        .collect();
    let passphrase_slot = kinds
        .iter()
        .any(|k| matches!(k, SlotKind::Passphrase { .. }));
    if has_secret(args) || (passphrase_slot && std::io::IsTerminal::is_terminal(&std::io::stdin()))
    {
        return secrets::unlocker(&args.unlock);
    }
    let repo = args.at.repo.display();
    if let Some(bound) = locked.binding() {
        bail!(
            "{repo} (format 1) opens with the keys of vault {}: give --vault PATH",
            hex(&bound)
        );
    }
    let mut ways: Vec<String> = Vec::new();
    for kind in kinds {
        let way = match kind {
            SlotKind::Passphrase { .. } => "--passphrase-file FILE".to_string(),
            SlotKind::KeyFile => "--key-file FILE".to_string(),
            SlotKind::RecoveryKey => "--recovery-key-file FILE".to_string(),
            SlotKind::Vault { vault_id } => {
                format!("--vault PATH (the vault with id {})", hex(vault_id))
            }
            // Opened without a secret, by asking the authority (`open`).
            SlotKind::Remote(_) | SlotKind::Threshold(_) => continue,
        };
        if !ways.contains(&way) {
            ways.push(way);
        }
    }
    if ways.is_empty() {
        bail!(atrest_backup::BackupError::NoKeyslots(repo.to_string()));
    }
    bail!(
        "no secret given to open {repo}: give {}",
        ways.join(", or ")
    )
}

/// The repository's remote and threshold keyslots (unauthenticated until
/// one opens it).
fn authority_slots<B: Backend>(locked: &LockedRepository<B>) -> Vec<Keyslot> {
    locked
        .keyslots()
        .iter()
        .filter_map(|s| s.slot.as_ref().ok())
        .filter(|s| matches!(s.kind, SlotKind::Remote(_) | SlotKind::Threshold(_)))
        .cloned()
        .collect()
}

fn open(args: &BackupKeyArgs) -> anyhow::Result<Repo> {
    let locked = LockedRepository::read(backend(&args.at)?)?;
    let authority_slots = authority_slots(&locked);
    if args.vault.is_none() && !has_secret(args) && !authority_slots.is_empty() {
        return open_remote(args, locked, &authority_slots);
    }
    let secret = secret(args, &locked)?;
    let bound: Vec<String> = locked
        .keyslots()
        .iter()
        .filter_map(|s| match &s.slot {
            Ok(atrest_vault::Keyslot {
                kind: SlotKind::Vault { vault_id },
                ..
            }) => Some(hex(vault_id)),
            _ => None,
        })
        .collect();
    match (locked.unlock(&secret), &secret, &args.vault) {
        (
            Err(atrest_backup::BackupError::NoMatchingSlot { .. }),
            Unlocker::Vault { vault_id, .. },
            Some(path),
        ) if !bound.is_empty() => bail!(
            "{} is bound to vault {}, but {} is vault {}; give the vault the repository was created with, or a secret of another of its keyslots",
            args.at.repo.display(),
            bound.join(" and vault "),
            path.display(),
            hex(vault_id)
        ),
        (result, _, _) => result.with_context(|| format!("{}", args.at.repo.display())),
    }
}

/// Opens the repository through its own remote or threshold keyslots, as
/// `atrest unlock` opens a vault: each slot's authorities are asked in
/// turn (a refusal, such as a revoked or shredded host, ends the search;
/// an unreachable authority moves on to the next slot), and the
/// authorities' checkpoints are kept only once the key opened the
/// repository.
fn open_remote(args: &BackupKeyArgs, locked: Locked, slots: &[Keyslot]) -> anyhow::Result<Repo> {
    let repo_text = args.at.repo.display().to_string();
    let repo_id = locked.repo_id();
    // Unlocking consumes what was read: read again only for a later slot.
    let mut locked = Some(locked);
    let state = StateDir::from_env();
    let options = super::remote::options(&args.retry);
    let runtime = super::remote::runtime()?;
    let mut first_error: Option<anyhow::Error> = None;
    for slot in slots {
        let released = runtime.block_on(async {
            match &slot.kind {
                SlotKind::Remote(remote) => {
                    atrest_agent::release_remote(&state, &options, repo_id, slot.id, remote).await
                }
                SlotKind::Threshold(threshold) => {
                    atrest_agent::release_threshold(&state, &options, repo_id, slot.id, threshold)
                        .await
                }
                _ => unreachable!("only authority slots are asked"),
            }
        });
        let released = match released {
            Ok(released) => released,
            Err(e) if !e.is_transient() => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("{repo_text}: keyslot {}", slot.id));
            }
            Err(e) => {
                first_error.get_or_insert(
                    anyhow::Error::new(e).context(format!("{repo_text}: keyslot {}", slot.id)),
                );
                continue;
            }
        };
        let secret = match slot.kind {
            SlotKind::Remote(_) => Unlocker::Remote(released.key.clone()),
            _ => Unlocker::Threshold(released.key.clone()),
        };
        let urls = released.urls.join(", ");
        let rotated = released.rotated;
        let this = match locked.take() {
            Some(read) => read,
            None => LockedRepository::read(backend(&args.at)?)?,
        };
        match this.unlock(&secret) {
            Ok(repo) if repo.opened_slot() == Some(slot.id) => {
                // The key proved right: only now are the checkpoints kept.
                released.confirm(&state)?;
                if rotated {
                    eprintln!(
                        "atrest: warning: {urls} rotated this host's secret; keyslot {} still opens until the old secret is retired: run `atrest backup enroll` again and remove keyslot {}",
                        slot.id, slot.id
                    );
                }
                return Ok(repo);
            }
            Ok(_) | Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!(
                    "{repo_text}: the key {urls} released does not open keyslot {}: the slot was changed or belongs to another enrollment; open with another keyslot's secret",
                    slot.id
                ));
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow::anyhow!("{repo_text}: no key authority answered")))
}

/// `atrest backup enroll`: a remote (or k-of-n threshold) keyslot of the
/// repository's own, bound at the authorities for this host.
fn enroll(args: &BackupEnrollArgs) -> anyhow::Result<ExitCode> {
    let (specs, host_name) = super::remote::authority_specs(&args.authority)?;
    let mut repo = open(&args.key)?;
    let state = StateDir::from_env();
    let threshold = args.authority.threshold;
    let (members, _) = super::remote::runtime()?.block_on(atrest_agent::enroll_members(
        &state, &specs, threshold, &host_name,
    ))?;
    let id = match threshold {
        None => {
            let member = members
                .first()
                .context("the authority returned no enrollment")?;
            repo.add_remote_slot(member, &specs[0].replicas, &args.label)?
        }
        Some(k) => repo.add_threshold_slot(k, &members, &args.label)?,
    };
    for member in &members {
        eprintln!(
            "atrest: enrolled at {} as {}",
            member.authority.url,
            member.authority.host_id.as_str()
        );
    }
    eprintln!(
        "atrest: added keyslot {id} to {}; commands given no secret now ask the key authority",
        args.key.at.repo.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn init(args: &BackupInitArgs) -> anyhow::Result<ExitCode> {
    let key = &args.key;
    match std::fs::read_dir(&key.at.repo) {
        _ if is_s3(&key.at) => {}
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; give an empty or new directory for the repository",
                    key.at.repo.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("{}", key.at.repo.display())),
    }
    let argon2 = super::argon2_params(&args.kdf)?;
    let first = match &key.vault {
        Some(vault) => super::remote::unlock_keys(vault, &key.unlock, &key.retry)?.backup_key(),
        None if key.unlock.recovery_key_file.is_some() => bail!(
            "a new repository's recovery key is made by init and printed once; give --passphrase-file or --key-file (or --vault) for its first keyslot"
        ),
        None => match &key.unlock.key_file {
            Some(path) => Unlocker::KeyFile(secrets::read_or_create_key_file(path)?),
            None => Unlocker::Passphrase(secrets::new_passphrase(
                key.unlock.passphrase_file.as_deref(),
            )?),
        },
    };
    let label = match &first {
        Unlocker::Vault { .. } => "vault",
        Unlocker::KeyFile(_) => "key file",
        _ => "passphrase",
    };
    let recovery = (!args.no_recovery_key).then(RecoveryKey::generate);
    let recovery_secret = recovery
        .as_ref()
        .map(|k| Unlocker::RecoveryKey(k.secret().clone()));
    let mut slots = vec![(&first, label)];
    if let Some(secret) = &recovery_secret {
        slots.push((secret, "recovery"));
    }
    let (repo, _) = Repository::create(backend(&key.at)?, ChunkSizes::DEFAULT, &slots, argon2)?;
    println!(
        "created backup repository {} (id {}); keyslots:",
        key.at.repo.display(),
        hex(&repo.repo_id())
    );
    for slot in repo.keyslots() {
        println!("  {}", slot_line(slot, key.vault.as_deref()));
    }
    if let Some(recovery) = &recovery {
        secrets::show_recovery_key(
            recovery,
            args.recovery_key_out.as_deref(),
            "the backup repository",
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One keyslot as `status` and `init` show it; a vault slot says what it
/// means.
fn slot_line(slot: &atrest_vault::Keyslot, vault: Option<&Path>) -> String {
    let label = if slot.label.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", slot.label)
    };
    match &slot.kind {
        SlotKind::Vault { vault_id } => format!(
            "{} vault{label}: vault {}{}: whoever unlocks it can back up and restore",
            slot.id,
            hex(vault_id),
            vault
                .map(|v| format!(" ({})", v.display()))
                .unwrap_or_default()
        ),
        kind => match super::status::AuthoritiesInfo::of(kind) {
            Some(authorities) => format!(
                "{} {}{label}: key authority {}",
                slot.id,
                kind.name(),
                authorities.line()
            ),
            None => format!("{} {}{label}", slot.id, kind.name()),
        },
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "a snapshot's wall-clock time, once"
    )]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn backup(args: &BackupRunArgs) -> anyhow::Result<ExitCode> {
    let paths = args
        .paths
        .iter()
        .map(|p| {
            std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
            std::path::absolute(p).with_context(|| format!("{}", p.display()))
        })
        .collect::<anyhow::Result<Vec<PathBuf>>>()?;
    let mut repo = if args.dry_run {
        open(&args.key)?
    } else {
        open_locked(&args.key, false)?
    };
    let meta = SnapshotMeta {
        time_ms: now_ms(),
        hostname: hostname(),
        tags: args.tags.clone(),
    };
    let options = atrest_backup::BackupOptions {
        excludes: patterns("--exclude", &args.excludes)?.0,
        one_file_system: args.one_file_system,
        dry_run: args.dry_run,
        parent: match (&args.parent, args.force) {
            (_, true) => Parent::None,
            (Some(id), false) => Parent::Snapshot(id.clone()),
            (None, false) => Parent::Latest,
        },
        threads: 0,
        progress: Some(Arc::new(Progress::default())),
        no_read_ahead: false,
    };
    let bar = super::progress::start(
        "backup",
        options.progress.clone().expect("set above"),
        super::progress::Total::scan(
            paths.clone(),
            Patterns(options.excludes.clone()),
            options.one_file_system,
        ),
        args.json,
    );
    let result = repo.backup_with(&paths, &meta, &options);
    drop(bar);
    let (id, snap) = result?;
    let s = &snap.summary;
    for e in &s.errors {
        eprintln!("atrest: skipped: {e}");
    }
    for f in &s.changed_while_read {
        eprintln!(
            "atrest: warning: {f} changed while it was read; the snapshot holds the bytes read (stop the writer, or back up a file system snapshot, for a consistent copy)"
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "snapshot": id, "dry_run": args.dry_run, "summary": s })
        );
    } else if args.dry_run {
        println!(
            "dry run: {} files, {} directories, {} bytes read; would store {} new bytes in {} blobs",
            s.files, s.dirs, s.bytes, s.new_bytes, s.new_blobs
        );
    } else {
        println!(
            "snapshot {} saved: {} files ({} unchanged, not read again), {} directories, {} other, {} bytes ({} new bytes in {} blobs, {} packs)",
            &id[..8],
            s.files,
            s.unchanged_files,
            s.dirs,
            s.others,
            s.bytes,
            s.new_bytes,
            s.new_blobs,
            s.packs
        );
    }
    if s.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "atrest: {} entries could not be read; the snapshot holds everything else",
            s.errors.len()
        );
        Ok(ExitCode::from(PARTIAL))
    }
}

fn time_text(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn snapshots(args: &BackupListArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.key)?;
    let all = repo.snapshots()?;
    if args.json {
        let list: Vec<_> = all
            .iter()
            .map(|(id, s)| serde_json::json!({ "id": id, "snapshot": s }))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<21} {:<16} {:>9} {:>14}  paths",
        "id", "time", "host", "files", "bytes"
    );
    for (id, s) in &all {
        println!(
            "{:<10} {:<21} {:<16} {:>9} {:>14}  {}{}",
            &id[..8],
            time_text(s.time_ms),
            s.hostname,
            s.summary.files,
            s.summary.bytes,
            s.paths.join(" "),
            if s.tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", s.tags.join(","))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn mount(args: &BackupMountArgs) -> anyhow::Result<ExitCode> {
    use fuser::{Config, MountOption, SessionACL};
    if !args.dir.is_dir() {
        bail!(
            "{}: not a directory; create an empty directory to mount on",
            args.dir.display()
        );
    }
    let repo = open_locked(&args.key, false)?;
    let fs = atrest_backup::SnapshotFs::new(repo)?;
    let mut options = Config::default();
    options.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("atrest-backup".into()),
        MountOption::Subtype("atrest-backup".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    options.n_threads = Some(2);
    // Ctrl-C or SIGTERM unmounts; `umount DIR` ends the session too. The
    // handlers are in place before the mount appears: a SIGTERM the moment
    // it is there must unmount, not kill the process with the default action.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    let (mut term, mut int) = {
        let _guard = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        )
    };
    let mut session = fuser::Session::new(fs, &args.dir, &options)
        .with_context(|| format!("mounting on {}", args.dir.display()))?;
    let mut unmounter = session.unmount_callable();
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        let _ = unmounter.unmount();
    });
    eprintln!(
        "serving the snapshots of {} read-only at {}; unmount with `umount {}` or Ctrl-C",
        args.key.at.repo.display(),
        args.dir.display(),
        args.dir.display()
    );
    session.run()?;
    Ok(ExitCode::SUCCESS)
}

/// Glob patterns of `flag`, each checked.
fn patterns(flag: &str, texts: &[String]) -> anyhow::Result<Patterns> {
    texts
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("{flag} {p}: not a valid pattern")))
        .collect::<anyhow::Result<_>>()
        .map(Patterns)
}

fn restore(args: &BackupRestoreArgs) -> anyhow::Result<ExitCode> {
    let options = atrest_backup::RestoreOptions {
        includes: patterns("--include", &args.includes)?,
        excludes: patterns("--exclude", &args.excludes)?,
        threads: 0,
        progress: Some(Arc::new(Progress::default())),
    };
    let repo = open_locked(&args.key, false)?;
    let (_, snap) = repo.snapshot(&args.snapshot)?;
    let bar = super::progress::start(
        "restore",
        options.progress.clone().expect("set above"),
        super::progress::Total::fixed(snap.summary.files, snap.summary.bytes),
        false,
    );
    let result = repo.restore_with(&args.snapshot, &args.target, &options);
    drop(bar);
    let report = result?;
    for f in &report.failed {
        eprintln!("atrest: not restored: {f}");
    }
    println!(
        "restored {} files, {} bytes under {}",
        report.files,
        report.bytes,
        args.target.display()
    );
    if report.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "atrest: {} entries were not restored (run `atrest backup check --read-data` to see what is damaged)",
            report.failed.len()
        );
        Ok(ExitCode::from(PARTIAL))
    }
}

fn check(args: &BackupCheckArgs) -> anyhow::Result<ExitCode> {
    let repo = open_locked(&args.key, false)?;
    let percent = match (args.read_data, args.read_data_subset) {
        (true, _) => 100,
        (false, Some(n)) => n,
        (false, None) => 0,
    };
    let report = repo.check_packs(percent)?;
    for p in &report.problems {
        println!("damaged: {p}");
    }
    println!(
        "{} snapshots, {} trees{}: {}",
        report.snapshots,
        report.trees,
        if percent > 0 {
            format!(
                ", {} packs and {} blobs read",
                report.packs_read, report.blobs_read
            )
        } else {
            String::new()
        },
        if report.problems.is_empty() {
            "no errors".to_string()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DAMAGED)
    })
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn status(args: &BackupListArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.key)?;
    let all: Vec<(String, Snapshot)> = repo.snapshots()?;
    let size = if is_s3(&args.key.at) {
        None
    } else {
        Some(dir_size(&args.key.at.repo))
    };
    let vaults: Vec<String> = repo.bound_vaults().iter().map(|v| hex(v)).collect();
    let vault = args.key.vault.as_deref();
    if args.json {
        let slots: Vec<_> = repo.keyslots().iter().map(slot_json).collect();
        println!(
            "{}",
            serde_json::json!({
                "repository": args.key.at.repo, "id": hex(&repo.repo_id()),
                "format": repo.version(), "keyslots": slots, "opened_with_slot": repo.opened_slot(),
                "bound_vaults": vaults, "damaged_keyslots": repo.keyslot_problems(),
                "snapshots": all.len(), "bytes": size,
                "latest": all.last().map(|(id, s)| serde_json::json!({ "id": id, "time_ms": s.time_ms })),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "repository: {} (id {}, format {})",
        args.key.at.repo.display(),
        hex(&repo.repo_id()),
        repo.version()
    );
    if let Some(bound) = repo.binding() {
        println!(
            "bound to:   vault {}{} (format 1: its backup key is this repository's key; no keyslots of its own)",
            hex(&bound),
            vault
                .map(|v| format!(" ({})", v.display()))
                .unwrap_or_default()
        );
    } else {
        if vaults.is_empty() {
            println!("bound to:   no vault (no vault keyslot)");
        } else {
            println!(
                "bound to:   vault {}: whoever unlocks it can back up and restore",
                vaults.join(", vault ")
            );
        }
        println!("keyslots:");
        for slot in repo.keyslots() {
            let opened = if repo.opened_slot() == Some(slot.id) {
                " (opened with)"
            } else {
                ""
            };
            println!("  {}{opened}", slot_line(slot, vault));
        }
        for problem in repo.keyslot_problems() {
            println!("  damaged: {problem}");
        }
    }
    println!("snapshots:  {}", all.len());
    if let Some((id, s)) = all.last() {
        println!("latest:     {} at {}", &id[..8], time_text(s.time_ms));
    }
    if let Some(size) = size {
        println!("size:       {size} bytes");
    }
    Ok(ExitCode::SUCCESS)
}

fn slot_json(slot: &atrest_vault::Keyslot) -> serde_json::Value {
    let mut value = serde_json::json!({
        "id": slot.id, "kind": slot.kind.name(), "label": slot.label,
    });
    match &slot.kind {
        SlotKind::Vault { vault_id } => value["vault_id"] = hex(vault_id).into(),
        SlotKind::Passphrase { params, .. } => {
            value["argon2"] = format!(
                "argon2id m={}KiB t={}",
                params.memory_kib, params.iterations
            )
            .into()
        }
        kind => {
            if let Some(authorities) = super::status::AuthoritiesInfo::of(kind) {
                value["authorities"] = serde_json::to_value(authorities).expect("json");
            }
        }
    }
    value
}

fn keyslot(cmd: BackupKeyslotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupKeyslotCommand::List { at, json } => {
            let locked = LockedRepository::read(backend(&at)?)?;
            locked
                .require_keyslots()
                .with_context(|| format!("{}", at.repo.display()))?;
            let mut list = Vec::new();
            for stored in locked.keyslots() {
                match &stored.slot {
                    Ok(slot) if json => list.push(slot_json(slot)),
                    Ok(slot) => println!("{}", slot_line(slot, None)),
                    Err(why) if json => list.push(serde_json::json!({
                        "object": stored.name, "damaged": why,
                    })),
                    Err(why) => println!("{}: damaged: {why}", stored.name),
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(list));
            } else if locked.keyslots().is_empty() {
                println!("no keyslots: nothing opens this repository (shredded)");
            }
        }
        BackupKeyslotCommand::Add { key, new, kdf } => {
            let argon2 = super::argon2_params(&kdf)?;
            let mut repo = open(&key)?;
            let (secret, recovery) = secrets::new_slot_secret(&new)?;
            let id = repo.add_slot(&secret, &new.label, argon2)?;
            if let Some(key) = recovery {
                secrets::show_recovery_key(
                    &key,
                    new.recovery_key_out.as_deref(),
                    "the backup repository",
                )?;
            }
            eprintln!("atrest: added keyslot {id}");
        }
        BackupKeyslotCommand::Remove { slot, key } => {
            let mut repo = open(&key)?;
            repo.remove_slot(slot)?;
            eprintln!("atrest: removed keyslot {slot} (its object overwritten and deleted)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code of `shred` without `--yes`: nothing was changed.
const NOT_CONFIRMED: u8 = 2;

fn shred(args: &BackupShredArgs) -> anyhow::Result<ExitCode> {
    let repo_text = args.key.at.repo.display().to_string();
    let locked = LockedRepository::read(backend(&args.key.at)?)?;
    locked.require_keyslots().context(repo_text.clone())?;
    let slots: Vec<String> = locked
        .keyslots()
        .iter()
        .map(|s| match &s.slot {
            Ok(slot) => atrest_backup::describe_slot(slot),
            Err(_) => s.name.clone(),
        })
        .collect();
    // With a secret given: proven to open it now, so that its failing
    // afterwards means something.
    let secret = if has_secret(&args.key) {
        let secret = secret(&args.key, &locked)?;
        let repo = LockedRepository::read(backend(&args.key.at)?)?
            .unlock(&secret)
            .with_context(|| {
                format!("{repo_text}: the secret given does not open it now; shred without any secret to destroy its keyslots anyway")
            })?;
        let snapshots = repo.snapshots()?.len();
        println!(
            "{repo_text}: opened with keyslot {}; {snapshots} snapshots",
            repo.opened_slot().unwrap_or(0)
        );
        Some(secret)
    } else {
        None
    };
    if !args.yes {
        eprintln!(
            "atrest: shred destroys every keyslot of {repo_text} ({}): every snapshot in it becomes unreadable for good, by every secret, vault and recovery key. Its data objects are left in place, unreadable. On a bucket with versioning, delete the old versions of keys/ too (docs/operations.md). Nothing was changed; run again with --yes to shred.",
            if slots.is_empty() {
                "none left".to_string()
            } else {
                slots.join(", ")
            }
        );
        return Ok(ExitCode::from(NOT_CONFIRMED));
    }
    let destroyed = locked.shred()?;
    for name in &destroyed {
        println!("destroyed {name}");
    }
    let after = LockedRepository::read(backend(&args.key.at)?)?;
    anyhow::ensure!(
        after.keyslots().is_empty(),
        "{repo_text}: keyslots are still listed after shredding"
    );
    match secret {
        Some(secret) => match after.unlock(&secret) {
            Ok(_) => bail!("{repo_text}: the secret still opens the repository after shredding"),
            Err(e) => println!("checked: the secret that opened it before no longer does ({e})"),
        },
        None => println!("checked: no keyslot is left, so no secret can open it"),
    }
    println!(
        "shredded {repo_text}: {} keyslots destroyed; every snapshot is unreadable; its data objects were not deleted",
        destroyed.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// [`open`], then a shared (`run`, `restore`, `check`) or exclusive
/// (`forget`, `prune`) lock held until the command ends.
fn open_locked(args: &BackupKeyArgs, exclusive: bool) -> anyhow::Result<Repo> {
    let mut repo = open(args)?;
    repo.lock(exclusive, &hostname())?;
    Ok(repo)
}

fn unlock_repo(args: &BackupUnlockArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.key)?;
    let host = hostname();
    let now = now_ms();
    for lock in repo.locks()? {
        match &lock.info {
            Ok(info) => println!(
                "{}: {} lock of process {} on {}, {} s old{}",
                lock.name,
                if info.exclusive {
                    "exclusive"
                } else {
                    "shared"
                },
                info.pid,
                info.hostname,
                now.saturating_sub(info.time_ms) / 1000,
                if info.is_stale(now, &host) {
                    " (stale)"
                } else {
                    ""
                }
            ),
            Err(e) => println!("{}: unreadable: {e}", lock.name),
        }
    }
    let n = repo.remove_locks(args.remove_all, &host)?;
    println!(
        "removed {n} {}lock{}",
        if args.remove_all { "" } else { "stale " },
        if n == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

fn forget(args: &BackupForgetArgs) -> anyhow::Result<ExitCode> {
    let policy = atrest_backup::KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
    };
    if policy.is_empty() == args.snapshots.is_empty() {
        bail!("name the snapshots to forget, or give a --keep-* policy (not both)");
    }
    let mut repo = open_locked(&args.key, !args.dry_run)?;
    let all = repo.snapshots()?;
    let doomed: Vec<String> = if policy.is_empty() {
        args.snapshots
            .iter()
            .map(|p| repo.snapshot(p).map(|(id, _)| id))
            .collect::<Result<_, _>>()?
    } else {
        let kept = atrest_backup::keep(&policy, &all);
        all.iter()
            .filter(|(id, _)| !kept.contains(id))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for id in &doomed {
        println!(
            "{} {}",
            if args.dry_run {
                "would forget"
            } else {
                "forget"
            },
            &id[..8]
        );
    }
    println!(
        "{} of {} snapshots {}",
        doomed.len(),
        all.len(),
        if args.dry_run {
            "would be forgotten"
        } else {
            "forgotten"
        }
    );
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    repo.forget(&doomed)?;
    if args.prune {
        prune(&mut repo)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn prune(repo: &mut Repo) -> anyhow::Result<ExitCode> {
    let r = repo.prune()?;
    println!(
        "pruned: {} blobs dropped, {} kept; {} packs deleted, {} rewritten; {} bytes freed",
        r.blobs_dropped, r.blobs_kept, r.packs_deleted, r.packs_repacked, r.bytes_freed
    );
    Ok(ExitCode::SUCCESS)
}

fn ls(args: &BackupLsArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.key)?;
    for entry in repo.list(&args.snapshot)? {
        let n = &entry.node;
        let path = String::from_utf8_lossy(&entry.path);
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "path": path, "kind": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid,
                    "size": n.size, "mtime_sec": n.mtime_sec, "mtime_nsec": n.mtime_nsec,
                })
            );
        } else {
            println!(
                "{:?} {:04o} {:>6} {:>6} {:>12} {} {path}",
                n.kind,
                n.mode,
                n.uid,
                n.gid,
                n.size,
                time_text(n.mtime_sec.max(0) as u64 * 1000)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(args: &BackupDiffArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.key)?;
    for (change, path) in repo.diff(&args.from, &args.to)? {
        let path = String::from_utf8_lossy(&path);
        let mark = match change {
            atrest_backup::Change::Added => "+",
            atrest_backup::Change::Removed => "-",
            atrest_backup::Change::Modified => "M",
            atrest_backup::Change::Metadata => "U",
        };
        if args.json {
            println!("{}", serde_json::json!({ "change": mark, "path": path }));
        } else {
            println!("{mark}  {path}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
