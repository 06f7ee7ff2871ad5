use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atrest_vault::MountLock;

use crate::cli::UnmountArgs;

/// How long a busy mount is retried before `unmount` gives up on it.
const BUSY_GRACE: Duration = Duration::from_secs(2);

/// Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len() + 1
            && let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// If `path` is a mount point: its file system type and source.
pub fn mount_source(path: &Path) -> anyhow::Result<Option<(String, String)>> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 3 || fields.len() < 5 {
            continue;
        }
        if Path::new(&unescape(fields[4])) == path {
            // The last match is the one on top.
            found = Some((fields[sep + 1].to_string(), unescape(fields[sep + 2])));
        }
    }
    Ok(found)
}

/// Our mounts are FUSE mounts whose source (fsname) is the vault root.
/// The type is `fuse` when root mounts directly, `fuse.atrest` through
/// fusermount3.
fn is_atrest_mount(fstype: &str, source: &str) -> bool {
    (fstype == "fuse" || fstype == "fuse.atrest")
        && Path::new(source).join(atrest_vault::CONFIG_FILE).exists()
}

/// Where each atrest vault is mounted: (vault, mount point).
pub fn atrest_mounts() -> Vec<(PathBuf, PathBuf)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let (fstype, source) = (fields.get(sep + 1)?, unescape(fields.get(sep + 2)?));
            is_atrest_mount(fstype, &source)
                .then(|| (PathBuf::from(source), PathBuf::from(unescape(fields[4]))))
        })
        .collect()
}

pub fn run(args: UnmountArgs) -> anyhow::Result<ExitCode> {
    let path = fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    let Some((fstype, source)) = mount_source(&path)? else {
        bail!("{} is not mounted", path.display());
    };
    if !is_atrest_mount(&fstype, &source) {
        bail!(
            "{} is a {fstype} mount, not an atrest vault; use umount",
            path.display()
        );
    }
    let vault = PathBuf::from(source);
    if rustix::process::geteuid().is_root() {
        let flags = if args.lazy {
            rustix::mount::UnmountFlags::DETACH
        } else {
            rustix::mount::UnmountFlags::empty()
        };
        // A path lookup that crosses the mount point at this instant (a
        // monitoring agent's statfs, a `find` over the parent) also makes
        // umount(2) answer EBUSY, for as long as the FUSE daemon takes to
        // answer it. Such a reference is gone within milliseconds; an open
        // file or a working directory stays. Retry for a short while, as
        // systemd does, before calling the mount busy.
        let deadline = Instant::now() + BUSY_GRACE;
        loop {
            match rustix::mount::unmount(&path, flags) {
                Ok(()) => break,
                Err(rustix::io::Errno::BUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(rustix::io::Errno::BUSY) => bail!(
                    "{} is busy: files under it are open or a process has its working directory there; \
                     stop those processes (see `fuser -vm {}`) or use --lazy",
                    path.display(),
                    path.display()
                ),
                Err(e) => bail!("cannot unmount {}: {e}", path.display()),
            }
        }
    } else {
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u");
        if args.lazy {
            cmd.arg("-z");
        }
        let status = cmd
            .arg(&path)
            .status()
            .context("cannot run fusermount3 (install fuse3)")?;
        if !status.success() {
            bail!(
                "fusermount3 could not unmount {} (busy? use --lazy)",
                path.display()
            );
        }
    }
    // Wait for the mount process to flush and let go of the vault, so a
    // remount right after this returns works.
    let deadline = Instant::now() + Duration::from_secs(30);
    while MountLock::holder(&vault).is_some() {
        if Instant::now() > deadline {
            bail!(
                "unmounted, but the mount process for {} has not exited after 30 s",
                vault.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("atrest: unmounted {}", path.display());
    Ok(ExitCode::SUCCESS)
}
