//! `atrest backup`: encrypted, deduplicated backups bound to a vault. The
//! repository's key is HKDF of the vault's master key (`atrest v1 backup
//! key`, salted with the vault id), so every way of unlocking the vault
//! (its keyslots, its key authority) opens the repository too, and
//! destroying the vault's keys makes every snapshot unreadable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use atrest_backup::{
    Backend, ChunkSizes, LocalBackend, Parent, Patterns, Progress, Repository, S3Backend,
    S3Options, Snapshot, SnapshotMeta,
};
use atrest_core::{SecretKey, labels};
use atrest_vault::Vault;

use crate::cli::{
    BackupCheckArgs, BackupCommand, BackupDiffArgs, BackupForgetArgs, BackupKeyArgs,
    BackupListArgs, BackupLsArgs, BackupMountArgs, BackupRestoreArgs, BackupRunArgs,
    BackupUnlockArgs,
};
use crate::hygiene;

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
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn repo_key(vault: &Vault) -> SecretKey {
    vault
        .master_key()
        .derive(&vault.config().vault_id, labels::BACKUP_KEY)
}

fn unlock(args: &BackupKeyArgs) -> anyhow::Result<Vault> {
    super::remote::unlock_keys(&args.vault, &args.unlock, &args.retry)
}

type Repo = Repository<Box<dyn Backend>>;

fn is_s3(args: &BackupKeyArgs) -> bool {
    args.repo.to_str().is_some_and(|r| r.starts_with("s3://"))
}

fn backend(args: &BackupKeyArgs) -> anyhow::Result<Box<dyn Backend>> {
    if is_s3(args) {
        let url = args.repo.to_str().unwrap_or_default();
        let options = S3Options {
            endpoint: args.s3_endpoint.clone(),
            ..S3Options::default()
        };
        Ok(Box::new(S3Backend::new(url, &options)?))
    } else {
        Ok(Box::new(LocalBackend::new(&args.repo)))
    }
}

fn open(args: &BackupKeyArgs) -> anyhow::Result<Repo> {
    let backend = backend(args)?;
    // Before any key: not a repository, a newer format, and which vault.
    let binding = Repository::binding_of(&backend)?;
    let vault = unlock(args)?;
    let id = vault.config().vault_id;
    match binding {
        Some(bound) if bound != id => bail!(
            "{} is bound to vault {}, but {} is vault {}; give the vault the repository was created with",
            args.repo.display(),
            hex(&bound),
            args.vault.display(),
            hex(&id)
        ),
        None => bail!(
            "{} is not bound to a vault; this version of atrest opens only vault-bound repositories",
            args.repo.display()
        ),
        Some(_) => {}
    }
    Repository::open(backend, &repo_key(&vault)).with_context(|| format!("{}", args.repo.display()))
}

fn init(args: &BackupKeyArgs) -> anyhow::Result<ExitCode> {
    match std::fs::read_dir(&args.repo) {
        _ if is_s3(args) => {}
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; give an empty or new directory for the repository",
                    args.repo.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("{}", args.repo.display())),
    }
    let vault = unlock(args)?;
    let id = vault.config().vault_id;
    let repo = Repository::init(
        backend(args)?,
        &repo_key(&vault),
        ChunkSizes::DEFAULT,
        Some(id),
    )?;
    println!(
        "created backup repository {} (id {}), bound to vault {} ({})",
        args.repo.display(),
        hex(&repo.repo_id()),
        args.vault.display(),
        hex(&id)
    );
    Ok(ExitCode::SUCCESS)
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
        args.key.repo.display(),
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
    let size = if is_s3(&args.key) {
        None
    } else {
        Some(dir_size(&args.key.repo))
    };
    let bound = repo.binding().map(|b| hex(&b)).unwrap_or_default();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "repository": args.key.repo, "id": hex(&repo.repo_id()), "bound_vault": bound,
                "snapshots": all.len(), "bytes": size,
                "latest": all.last().map(|(id, s)| serde_json::json!({ "id": id, "time_ms": s.time_ms })),
            })
        );
    } else {
        println!(
            "repository: {} (id {})",
            args.key.repo.display(),
            hex(&repo.repo_id())
        );
        println!(
            "bound to:   vault {} ({bound}): its keys open this repository",
            args.key.vault.display()
        );
        println!("snapshots:  {}", all.len());
        if let Some((id, s)) = all.last() {
            println!("latest:     {} at {}", &id[..8], time_text(s.time_ms));
        }
        if let Some(size) = size {
            println!("size:       {size} bytes");
        }
    }
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
