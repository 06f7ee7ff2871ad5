//! `atrest mount`: unlock in this process, then hand the master key over a
//! pipe to a mount process of our own binary, which serves the file system
//! and reports "ready" (or the error) on its stdout. With `--foreground`
//! this process serves the file system itself.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use atrest_core::SecretKey;
use atrest_fuse::MountConfig;
use atrest_remote::ReportReason;
use atrest_vault::{
    AuthorityWitness, DurableGeneration, LocalWitnessFile, LockedVault, MountLock, Vault,
};
use zeroize::Zeroizing;

use crate::cli::MountArgs;
use crate::{hygiene, secrets};

pub fn run(args: MountArgs) -> anyhow::Result<ExitCode> {
    match mount_vault(args) {
        Err(e) if is_witness_refusal(&e) => {
            eprintln!("atrest: error: {e:#}");
            Ok(ExitCode::from(crate::EXIT_REFUSED))
        }
        other => other,
    }
}

/// A format 2 vault its witness refused (docs/format.md §16.17.5): rolled
/// back, forked, or a damaged witness file. Exit 5: retrying cannot help.
#[derive(Debug)]
struct WitnessRefusal(String);

impl std::fmt::Display for WitnessRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WitnessRefusal {}

/// Whether `error` is a mount its witness refused (exit 5).
pub(crate) fn is_witness_refusal(error: &anyhow::Error) -> bool {
    error.downcast_ref::<WitnessRefusal>().is_some()
}

/// What the mount process prints before "ready" when the witness check
/// took a vault that did not descend from its witness.
fn witness_note(ready: &atrest_fuse::Ready) -> Option<String> {
    if let Some(rollback) = &ready.authority_rollback {
        return Some(format!(
            "rollback accepted ({}) by the key authority {}: mounted checkpoint {} (sequence {}) \
             against witnessed checkpoint {} (sequence {}); recorded in the vault's log, and the \
             authority now follows this copy",
            rollback.standing,
            rollback.url,
            rollback.disk.checkpoint,
            rollback.disk.sequence,
            rollback.witnessed.checkpoint,
            rollback.witnessed.sequence
        ));
    }
    let Some(atrest_vault::WitnessCheck::RollbackAccepted {
        standing,
        witnessed,
        disk,
    }) = ready.witness
    else {
        return None;
    };
    let witnessed = witnessed.map_or("a damaged witness file".to_string(), |w| {
        format!(
            "witnessed checkpoint {} (sequence {})",
            w.checkpoint, w.sequence
        )
    });
    Some(format!(
        "rollback accepted ({standing}): mounted checkpoint {} (sequence {}) against {witnessed}; \
         recorded in the vault's log and the witness now follows this copy",
        disk.checkpoint, disk.sequence
    ))
}

fn mount_vault(args: MountArgs) -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let vault_path =
        fs::canonicalize(&args.vault).with_context(|| format!("vault {}", args.vault.display()))?;
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    check_dev_fuse()?;
    let config = mount_config(&args, &vault_path)?;

    if args.master_key_stdin {
        return serve_from_parent(&vault_path, &mountpoint, &config, &args.log_file);
    }
    let (_, locked) = super::open_locked(&vault_path)?;
    if locked.config().backend != atrest_vault::Backend::Fuse {
        bail!(
            "{} is an fscrypt vault: the kernel serves it in place; open it with `atrest unlock {}`",
            vault_path.display(),
            vault_path.display()
        );
    }
    if let Some(holder) = MountLock::holder(&vault_path) {
        bail!(
            "{} is already mounted ({holder}); unmount it first with `atrest unmount`",
            vault_path.display()
        );
    }
    let vault = locked.unlock(&secrets::unlocker(&args.unlock)?)?;
    if args.foreground {
        return serve(vault, &mountpoint, &config, &args.log_file, |ready| {
            if let Some(note) = witness_note(ready) {
                eprintln!("atrest: {note}");
            }
        });
    }
    spawn_background(&args, vault.master_key(), &vault_path, &mountpoint, &[])
}

/// `atrest unlock VAULT --mount DIR [-o OPTIONS]`: mounts a FUSE vault that
/// was already unlocked (by its key authority), through the same background
/// mount process as `atrest mount`. `witnessed`: what the authorities that
/// released the key had witnessed of a format 2 vault, which the mount
/// process checks (docs/format.md §16.17.4).
pub(crate) fn mount_unlocked(
    vault: &Vault,
    mountpoint: &Path,
    options: &[String],
    witnessed: &[AuthorityWitness],
) -> anyhow::Result<ExitCode> {
    let vault_path = fs::canonicalize(vault.root())?;
    let mountpoint = check_mountpoint(mountpoint)?;
    check_dev_fuse()?;
    if let Some(holder) = MountLock::holder(&vault_path) {
        bail!(
            "{} is already mounted ({holder}); unmount it first with `atrest unmount`",
            vault_path.display()
        );
    }
    let args = MountArgs {
        vault: vault_path.clone(),
        mountpoint: mountpoint.clone(),
        unlock: Default::default(),
        foreground: false,
        options: options.to_vec(),
        threads: 4,
        cache_seconds: 1.0,
        log_file: None,
        master_key_stdin: false,
        accept_rollback: false,
    };
    mount_config(&args, &vault_path)?;
    spawn_background(
        &args,
        vault.master_key(),
        &vault_path,
        &mountpoint,
        witnessed,
    )
}

/// Internal, for tests that need many checkpoints quickly:
/// `ATREST_CHECKPOINT_INTERVAL_MS` shortens the mount's checkpoint timer.
fn checkpoint_interval() -> anyhow::Result<Option<Duration>> {
    let Some(value) = std::env::var_os("ATREST_CHECKPOINT_INTERVAL_MS") else {
        return Ok(None);
    };
    let ms: u64 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|ms| (1..=30_000).contains(ms))
        .with_context(|| {
            format!("ATREST_CHECKPOINT_INTERVAL_MS={value:?} is not 1 to 30000 milliseconds")
        })?;
    Ok(Some(Duration::from_millis(ms)))
}

fn mount_config(args: &MountArgs, vault: &Path) -> anyhow::Result<MountConfig> {
    let mut config = MountConfig {
        threads: args.threads,
        ttl: Duration::from_secs_f64(args.cache_seconds.clamp(0.0, 3600.0)),
        fsname: vault.display().to_string(),
        accept_rollback: args.accept_rollback,
        checkpoint_interval: checkpoint_interval()?,
        ..MountConfig::default()
    };
    for option in &args.options {
        match option.as_str() {
            "allow_other" => config.allow_other = true,
            "suid" => config.suid = true,
            "dev" => config.dev = true,
            "nosuid" => config.suid = false,
            "nodev" => config.dev = false,
            "" => {}
            other => bail!("unknown mount option '{other}' (known: allow_other, suid, dev)"),
        }
    }
    Ok(config)
}

/// A normal user mounts through the set-user-id fusermount3, but fuser
/// opens /dev/fuse first and gives up if it may not; say what fixes it.
fn check_dev_fuse() -> anyhow::Result<()> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) and install fuse3")
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "/dev/fuse is not accessible to this user; install fuse3 (its udev rule makes /dev/fuse mode 0666) \
             or run `chmod 0666 /dev/fuse` as root"
        ),
        Err(e) => bail!("cannot open /dev/fuse: {e}"),
    }
}

fn check_mountpoint(path: &Path) -> anyhow::Result<PathBuf> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.raw_os_error() == Some(libc_enotconn()) => bail!(
            "{} is a dead mount (its mount process is gone); clean it up with `atrest unmount --lazy {}`",
            path.display(),
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mount point {} does not exist; create it with mkdir",
                path.display()
            )
        }
        Err(e) => bail!("mount point {}: {e}", path.display()),
    };
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", path.display());
    }
    let path = fs::canonicalize(path)?;
    if crate::commands::unmount::mount_source(&path)?.is_some() {
        bail!(
            "{} is already a mount point; unmount it first",
            path.display()
        );
    }
    if fs::read_dir(&path)?.next().is_some() {
        bail!(
            "mount point {} is not empty; mounting over files would hide them",
            path.display()
        );
    }
    Ok(path)
}

fn libc_enotconn() -> i32 {
    rustix::io::Errno::NOTCONN.raw_os_error()
}

/// Starts the mount process and hands it, on its standard input, the
/// master key (32 bytes), then what the key authorities witnessed (JSON, to
/// the end of the input; nothing when no authority released the key).
fn spawn_background(
    args: &MountArgs,
    master: &SecretKey,
    vault: &Path,
    mountpoint: &Path,
    witnessed: &[AuthorityWitness],
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the atrest executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(child_args(args, vault, mountpoint))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C at this terminal must not kill it.
        .process_group(0);
    let mut child = cmd.spawn().context("cannot start the mount process")?;
    {
        let mut stdin = child.stdin.take().context("mount process stdin")?;
        stdin
            .write_all(master.expose())
            .context("cannot hand the key to the mount process")?;
        if !witnessed.is_empty() {
            serde_json::to_writer(&mut stdin, witnessed)
                .context("cannot hand the authorities' witness to the mount process")?;
        }
    }
    let stdout = child.stdout.take().context("mount process stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        stdout.read_line(&mut line)?;
        let Some(note) = line.trim_end().strip_prefix("note: ") else {
            break;
        };
        eprintln!("atrest: {note}");
    }
    if let Some(message) = line.trim_end().strip_prefix("refused: ") {
        let _ = child.wait();
        return Err(WitnessRefusal(message.to_string()).into());
    }
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ready" => {
            eprintln!(
                "atrest: {} mounted at {}",
                vault.display(),
                mountpoint.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(message) => {
            let _ = child.wait();
            bail!("{message}")
        }
        None => {
            let status = child.wait()?;
            bail!("the mount process exited before the mount was ready ({status})")
        }
    }
}

/// The mount process's arguments (after the executable):
/// `mount VAULT MOUNTPOINT --master-key-stdin ...`, which `Cli::parse_args`
/// recognises and parses without building the rest of the command tree.
pub(crate) fn child_args(args: &MountArgs, vault: &Path, mountpoint: &Path) -> Vec<OsString> {
    let mut child: Vec<OsString> = vec![
        "mount".into(),
        vault.into(),
        mountpoint.into(),
        crate::cli::MOUNT_CHILD_FLAG.into(),
        "--threads".into(),
        args.threads.to_string().into(),
        "--cache-seconds".into(),
        args.cache_seconds.to_string().into(),
    ];
    if !args.options.is_empty() {
        child.push("-o".into());
        child.push(args.options.join(",").into());
    }
    if let Some(log) = &args.log_file {
        child.push("--log-file".into());
        child.push(log.into());
    }
    if args.accept_rollback {
        child.push("--accept-rollback".into());
    }
    child
}

/// The mount process: reads the key from the parent, mounts, says "ready".
fn serve_from_parent(
    vault_path: &Path,
    mountpoint: &Path,
    config: &MountConfig,
    log_file: &Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut key = Zeroizing::new([0u8; 32]);
    std::io::stdin()
        .read_exact(&mut key[..])
        .context("reading the master key from the parent")?;
    let master = SecretKey::from_bytes(*key);
    let mut rest = Vec::new();
    std::io::stdin()
        .read_to_end(&mut rest)
        .context("reading the authorities' witness from the parent")?;
    let mut config = config.clone();
    if !rest.is_empty() {
        config.authorities = serde_json::from_slice(&rest)
            .context("the authorities' witness from the parent does not parse")?;
    }
    let config = &config;
    let result = LockedVault::open(vault_path)
        .and_then(|locked| Vault::from_master_key(locked, master))
        .map_err(anyhow::Error::from)
        .and_then(|vault| {
            serve(vault, mountpoint, config, log_file, |ready| {
                let mut out = std::io::stdout();
                if let Some(note) = witness_note(ready) {
                    let _ = writeln!(out, "note: {note}");
                }
                let _ = writeln!(out, "ready");
                let _ = out.flush();
            })
        });
    if let Err(e) = &result {
        // The parent may be gone; never panic on the closed pipe.
        let kind = if is_witness_refusal(e) {
            "refused"
        } else {
            "error"
        };
        let _ = writeln!(std::io::stdout(), "{kind}: {e:#}");
    }
    result
}

fn serve(
    vault: Vault,
    mountpoint: &Path,
    config: &MountConfig,
    log_file: &Option<PathBuf>,
    ready: impl FnOnce(&atrest_fuse::Ready),
) -> anyhow::Result<ExitCode> {
    let holder = format!("{} {}", std::process::id(), mountpoint.display());
    let _lock = MountLock::acquire(vault.root(), &holder)?;
    hygiene::lock_memory();
    if let Some(path) = log_file {
        redirect_log(path)?;
    }
    let mut config = config.clone();
    if vault.config().format == atrest_vault::VERSION_2 {
        let state = atrest_agent::StateDir::from_env();
        config.witness = Some(LocalWitnessFile::in_state_dir(
            state.path(),
            &vault.config().vault_id,
        ));
        // The key authorities of its remote and threshold slots witness
        // its generations (§16.17.1).
        match atrest_agent::Reporter::start(vault.config(), state, atrest_agent::REPORT_INTERVAL) {
            Ok(reporter) => {
                config.reporter = reporter.map(|r| {
                    std::sync::Arc::new(ToAuthorities(r))
                        as std::sync::Arc<dyn atrest_fuse::GenerationReporter>
                });
            }
            Err(e) => tracing::warn!(
                "no generation reports to this vault's key authorities: {e}; they go on \
                 witnessing the generation they saw last"
            ),
        }
    }
    if let Err(e) = atrest_fuse::mount(vault, mountpoint, &config, ready) {
        if let Some(atrest_vault::VaultError::Witness(message)) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<atrest_vault::VaultError>())
        {
            return Err(WitnessRefusal(message.clone()).into());
        }
        return Err(
            anyhow::Error::new(e).context(format!("cannot mount at {}", mountpoint.display()))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A format 2 mount's durable generations, to the key authorities.
#[derive(Debug)]
struct ToAuthorities(atrest_agent::Reporter);

impl atrest_fuse::GenerationReporter for ToAuthorities {
    fn opened(&self, generation: DurableGeneration, rollback_accepted: bool) {
        let reason = if rollback_accepted {
            ReportReason::RollbackAccepted
        } else {
            ReportReason::Mount
        };
        self.0.report(generation, reason);
    }

    fn checkpointed(&self, generation: DurableGeneration) {
        self.0.report(generation, ReportReason::Periodic);
    }

    fn unmounted(&self, generation: DurableGeneration) {
        self.0.finish(generation, ReportReason::Unmount);
    }

    fn take_acknowledged(&self) -> Vec<atrest_vault::Acknowledgement> {
        self.0.take_acknowledged()
    }
}

fn redirect_log(path: &Path) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    rustix::stdio::dup2_stderr(&file).context("redirecting the log")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use super::child_args;
    use crate::cli::{Cli, Command, MountArgs};

    /// What the parent passes is what the mount process's own parser
    /// (`Cli::parse_mount_child`, not the whole tree) reads back.
    #[test]
    fn the_mount_process_reads_back_its_arguments() {
        let given = MountArgs {
            vault: PathBuf::from("/srv/vault"),
            mountpoint: PathBuf::from("/srv/plain"),
            unlock: Default::default(),
            foreground: false,
            options: vec!["allow_other".into(), "nodev".into()],
            threads: 7,
            cache_seconds: 0.25,
            log_file: Some(PathBuf::from("/var/log/atrest mount.log")),
            master_key_stdin: false,
            accept_rollback: true,
        };
        let mut argv: Vec<OsString> = vec!["atrest".into()];
        argv.extend(child_args(
            &given,
            Path::new("/srv/vault"),
            Path::new("/srv/plain"),
        ));
        let cli = Cli::parse_mount_child(&argv).expect("the mount process's own parser");
        let Command::Mount(read) = cli.command else {
            panic!("not a mount: {:?}", cli.command)
        };
        assert_eq!(read.vault, given.vault);
        assert_eq!(read.mountpoint, given.mountpoint);
        assert!(read.master_key_stdin);
        assert!(!read.foreground);
        assert_eq!(read.options, given.options);
        assert_eq!(read.threads, 7);
        assert_eq!(read.cache_seconds, 0.25);
        assert_eq!(read.log_file, given.log_file);
        assert!(read.accept_rollback);

        let plain = MountArgs {
            options: Vec::new(),
            log_file: None,
            accept_rollback: false,
            ..given
        };
        let mut argv: Vec<OsString> = vec!["atrest".into()];
        argv.extend(child_args(&plain, &plain.vault, &plain.mountpoint));
        let cli = Cli::parse_mount_child(&argv).expect("the mount process's own parser");
        let Command::Mount(read) = cli.command else {
            panic!("not a mount: {:?}", cli.command)
        };
        assert!(read.options.is_empty() && read.log_file.is_none() && !read.accept_rollback);
    }
}
